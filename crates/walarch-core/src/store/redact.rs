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
    redact_values(&redact_elements(&out))
}

/// Query parameters and headers whose values are secrets, matched case-insensitively.
const SECRET_KEYS: [&str; 8] = [
    "x-amz-signature=",
    "x-amz-credential=",
    "x-amz-security-token=",
    "x-amz-security-token:",
    "authorization:",
    "signature=",
    "sig=",
    "sharedkey ",
];

/// S3 error bodies for a bad signature echo the signed request, headers and all.
const SECRET_ELEMENTS: [&str; 4] = [
    "CanonicalRequest",
    "CanonicalRequestBytes",
    "StringToSign",
    "StringToSignBytes",
];

fn redact_elements(text: &str) -> String {
    let mut out = text.to_owned();
    for element in SECRET_ELEMENTS {
        let (open, close) = (format!("<{element}>"), format!("</{element}>"));
        let mut from = 0;
        while let Some(start) = out[from..].find(&open).map(|i| from + i + open.len()) {
            let end = out[start..].find(&close).map_or(out.len(), |i| start + i);
            out.replace_range(start..end, "<redacted>");
            from = start + "<redacted>".len();
        }
    }
    out
}

fn redact_values(text: &str) -> String {
    // ASCII lower-casing keeps byte offsets, so positions found in `lower` apply to `text`.
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some((at, key)) = SECRET_KEYS
        .iter()
        .filter_map(|key| lower[pos..].find(key).map(|i| (pos + i, *key)))
        .min_by_key(|(at, _)| *at)
    {
        let value_start = at + key.len();
        let header = key.ends_with(':') || key.ends_with(' ');
        let value_end = text[value_start..]
            .find(|c: char| {
                if header {
                    c == '\n'
                } else {
                    c.is_whitespace() || matches!(c, '&' | '"' | '\'' | '<')
                }
            })
            .map_or(text.len(), |i| value_start + i);
        out.push_str(&text[pos..value_start]);
        out.push_str("<redacted>");
        pos = value_end;
    }
    out.push_str(&text[pos..]);
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
        assert!(clean.ends_with(" sent"), "{clean}");
    }

    #[test]
    fn removes_every_occurrence_in_any_case() {
        let clean =
            redact_secrets("x-amz-credential=FIRST then X-AMZ-CREDENTIAL=SECOND and sig=THIRD");
        for secret in ["FIRST", "SECOND", "THIRD"] {
            assert!(!clean.contains(secret), "{clean}");
        }
    }

    #[test]
    fn removes_signed_requests_echoed_by_s3() {
        let body = "<Error><Code>SignatureDoesNotMatch</Code><CanonicalRequest>PUT\n/b/k\nhost:s3\n\
                    x-amz-security-token:TOKEN123\n</CanonicalRequest><StringToSign>AWS4-HMAC-SHA256\nSTS\
                    </StringToSign></Error>";
        let clean = redact_secrets(body);
        assert!(
            !clean.contains("TOKEN123") && !clean.contains("STS<"),
            "{clean}"
        );
        assert!(clean.contains("SignatureDoesNotMatch"), "{clean}");
        let clean = redact_secrets(
            "request headers:\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIA/2026\nhost: x",
        );
        assert!(!clean.contains("AKIA"), "{clean}");
        assert!(clean.contains("host: x"), "{clean}");
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
