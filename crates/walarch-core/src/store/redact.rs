//! Keeps credentials out of logs and error messages. Store errors can quote request URLs,
//! and those may carry signed query strings (S3 presigned `X-Amz-Signature`, Azure SAS `sig=`)
//! or user information; all of it is cut before a message leaves walarch.

/// Returns `text` with URL query strings and `user:password@` parts replaced by `<redacted>`.
pub fn redact_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        // Copy up to and including "://", then sanitise the URL that follows.
        out.push_str(&rest[..start + 3]);
        let after = &rest[start + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '>' | ')' | ','))
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        let (authority_and_path, query) = match url.split_once('?') {
            Some((head, _)) => (head, Some("<redacted>")),
            None => (url, None),
        };
        let (authority, path) = authority_and_path.split_at(
            authority_and_path
                .find('/')
                .unwrap_or(authority_and_path.len()),
        );
        match authority.rsplit_once('@') {
            Some((_, host)) => {
                out.push_str("<redacted>@");
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        out.push_str(path);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        rest = tail;
    }
    out.push_str(rest);
    // Bare credential-looking assignments outside URLs (e.g. in a quoted header).
    for key in [
        "X-Amz-Signature=",
        "X-Amz-Credential=",
        "X-Amz-Security-Token=",
        "sig=",
    ] {
        while let Some(at) = out.find(key) {
            let value_start = at + key.len();
            let value_end = out[value_start..]
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | '\''))
                .map_or(out.len(), |e| value_start + e);
            if &out[value_start..value_end] == "<redacted>" {
                break;
            }
            out.replace_range(value_start..value_end, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_secrets;

    #[test]
    fn removes_query_strings_and_user_info() {
        let msg = "Error performing GET https://acct.blob.core.windows.net/c/wal/x?sv=2022&sig=ABCsecret%3D in 1s";
        let clean = redact_secrets(msg);
        assert!(!clean.contains("ABCsecret"), "{clean}");
        assert!(
            clean.contains("https://acct.blob.core.windows.net/c/wal/x?<redacted> in 1s"),
            "{clean}"
        );

        let clean = redact_secrets("connect to s3://KEY:SECRET@bucket/prefix failed");
        assert_eq!(clean, "connect to s3://<redacted>@bucket/prefix failed");

        let clean = redact_secrets("header X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA/x sent");
        assert!(
            !clean.contains("deadbeef") && !clean.contains("AKIA"),
            "{clean}"
        );
    }

    #[test]
    fn leaves_plain_text_alone() {
        let msg = "wal/0000000100000000/000000010000000000000001.zst: not found";
        assert_eq!(redact_secrets(msg), msg);
        assert_eq!(
            redact_secrets("http://127.0.0.1:9000/bucket/key"),
            "http://127.0.0.1:9000/bucket/key"
        );
    }
}
