#!/usr/bin/env bash
# End-to-end suite of the walarch operator on a real Kubernetes cluster (kind or k3d).
#
#   kind create cluster
#   WALARCH_K8S_E2E=1 tests/k8s/run.sh
#
# Skipped (exit 0, one line) unless WALARCH_K8S_E2E=1, kubectl is installed and
# `kubectl cluster-info` answers. A skipped run is not a passed run. See tests/k8s/README.md.
#
# Environment:
#   WALARCH_K8S_E2E=1        run at all
#   WALARCH_E2E_IMAGE        image to build and test (default walarch:e2e)
#   WALARCH_E2E_BUILD=0      do not build/load the image (it is already on the cluster's nodes)
#   WALARCH_E2E_KEEP=1       keep the walarch-e2e namespace at the end (for debugging)
#   MINIO_IMAGE, MC_IMAGE    the S3 emulator's images (pinned defaults below)
set -euo pipefail

skip() {
    echo "tests/k8s: SKIPPED (no Kubernetes cluster configured; this suite is not counted as passed)"
    exit 0
}
[[ "${WALARCH_K8S_E2E:-}" == 1 ]] || skip
command -v kubectl >/dev/null 2>&1 || skip
kubectl --request-timeout=15s cluster-info >/dev/null 2>&1 || skip

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
MANIFESTS=tests/k8s/manifests
NS=walarch-e2e # fixed: the repositories' s3Endpoint names it (http://minio.walarch-e2e:9000)
OPERATOR_NS=walarch-system
IMAGE=${WALARCH_E2E_IMAGE:-walarch:e2e}
MINIO_IMAGE=${MINIO_IMAGE:-quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z}
MC_IMAGE=${MC_IMAGE:-quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z}
# The instance manager puts PostgreSQL's socket beside the data directory (pgdata's parent).
PGSOCKET=/var/lib/postgresql/data
ROWS_BEFORE=100  # written before the backup
ROWS_BETWEEN=50  # written after the backup, before the noted time (replayed from WAL)
ROWS_AFTER=25    # written after the noted time (the clone must not have them)

TARGET_TIME=""  # the noted time (take_backup)
PRIMARY=""      # main's primary pod
OLD_PRIMARY=""  # main's primary before the failover
FOUND=""        # set by one_primary

# ---- helpers ---------------------------------------------------------------------------------

k() { kubectl -n "$NS" "$@"; }

log() { echo "    $*"; }

# Ends the current step as failed (the EXIT trap prints FAIL, diagnostics, and cleans up).
die() {
    echo "    error: $*" >&2
    exit 1
}

# Fills the manifests' placeholders.
render() {
    sed -e "s|@IMAGE@|${IMAGE}|g" \
        -e "s|@TARGET_TIME@|${TARGET_TIME}|g" \
        -e "s|@MINIO_IMAGE@|${MINIO_IMAGE}|g" \
        -e "s|@MC_IMAGE@|${MC_IMAGE}|g" \
        "$MANIFESTS/$1"
}

apply() { render "$1" | k apply -f -; }

# wait_jsonpath RESOURCE JSONPATH VALUE SECONDS: `kubectl wait --for=jsonpath`, retried until
# the deadline (kubectl wait gives up at once while the resource or the field does not exist).
wait_jsonpath() {
    local resource=$1 path=$2 value=$3 deadline=$((SECONDS + $4)) left
    while :; do
        left=$((deadline - SECONDS))
        ((left > 0)) || return 1
        if k wait "$resource" --for="jsonpath=${path}=${value}" --timeout="${left}s" >/dev/null 2>&1; then
            return 0
        fi
        sleep 2
    done
}

# until_true SECONDS COMMAND...: runs COMMAND every 2 s until it succeeds or time is up.
until_true() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 2
    done
}

# The pods of CLUSTER labelled walarch.io/role=primary, one per line.
primaries() {
    k get pods -l "walarch.io/cluster=$1,walarch.io/role=primary" \
        -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'
}

# Succeeds when CLUSTER has exactly one primary pod, other than EXCLUDED; sets FOUND to it.
one_primary() {
    local cluster=$1 excluded=${2:-} found
    found=$(primaries "$cluster")
    [[ -n "$found" && $(wc -l <<<"$found") -eq 1 && "$found" != "$excluded" ]] || return 1
    FOUND=$found
}

# The ready endpoints of SERVICE, as "pod-name" lines, sorted.
ready_endpoints() {
    k get endpointslices -l "kubernetes.io/service-name=$1" \
        -o jsonpath='{range .items[*].endpoints[*]}{.targetRef.name}{" "}{.conditions.ready}{"\n"}{end}' |
        awk '$2 == "true" { print $1 }' | sort
}

# Succeeds when POD carries walarch.io/role=replica.
labelled_replica() {
    [[ "$(k get pod "$1" -o jsonpath='{.metadata.labels.walarch\.io/role}')" == replica ]]
}

# Succeeds when SERVICE's ready endpoints are exactly POD.
service_selects() { [[ "$(ready_endpoints "$1")" == "$2" ]]; }

# sql POD SQL: one statement as postgres over the local socket (psql), unaligned, tuples only.
sql() {
    local pod=$1
    shift
    k exec "$pod" -c postgres -- timeout 120 \
        psql -h "$PGSOCKET" -U postgres -d postgres -X -A -t -v ON_ERROR_STOP=1 -c "$1"
}

# "before|between|after" row counts on POD.
row_counts() {
    sql "$1" "SELECT count(*) FILTER (WHERE phase = 'before') || '|' ||
                      count(*) FILTER (WHERE phase = 'between') || '|' ||
                      count(*) FILTER (WHERE phase = 'after') FROM e2e"
}

insert_rows() { # POD PHASE COUNT
    sql "$1" "INSERT INTO e2e (phase) SELECT '$2' FROM generate_series(1, $3)" >/dev/null
}

# ---- steps -----------------------------------------------------------------------------------

STEPS=(
    build_image
    load_image
    install_operator
    start_minio
    create_cluster
    primary_and_service
    write_rows
    take_backup
    write_more
    failover
    pitr_clone
    refuse_clone
    rejoin
)
declare -A ABOUT=(
    [build_image]="build the image (docker build -f deploy/image/Dockerfile)"
    [load_image]="load the image into the cluster's nodes (kind or k3d)"
    [install_operator]="apply the CRDs, RBAC and operator; the operator runs the image"
    [start_minio]="start MinIO in $NS and create the bucket walarch-e2e"
    [create_cluster]="a 3-instance Cluster 'main' becomes Healthy"
    [primary_and_service]="exactly one pod is primary; main-rw selects it, main-ro the others"
    [write_rows]="write $ROWS_BEFORE rows on the primary"
    [take_backup]="a Backup completes; more rows; note the time"
    [write_more]="write $ROWS_AFTER rows after the noted time; WAL archived"
    [failover]="delete the primary pod: another pod becomes primary, no row lost, main-rw follows"
    [pitr_clone]="a clone recovered to the noted time has the rows before it, none after"
    [refuse_clone]="a clone archiving into its source's repository is refused, nothing created"
    [rejoin]="the old primary rejoins as a replica; 'main' is Healthy again"
)

build_image() {
    if [[ "${WALARCH_E2E_BUILD:-1}" == 0 ]]; then
        log "WALARCH_E2E_BUILD=0: using $IMAGE as present on the nodes"
        return
    fi
    command -v docker >/dev/null 2>&1 || die "docker is needed to build the image"
    docker build -f deploy/image/Dockerfile -t "$IMAGE" .
}

load_image() {
    if [[ "${WALARCH_E2E_BUILD:-1}" == 0 ]]; then
        log "WALARCH_E2E_BUILD=0: not loading"
        return
    fi
    local context
    context=$(kubectl config current-context 2>/dev/null || true)
    if [[ "$context" == kind-* ]] && command -v kind >/dev/null 2>&1; then
        kind load docker-image "$IMAGE" --name "${context#kind-}"
    elif [[ "$context" == k3d-* ]] && command -v k3d >/dev/null 2>&1; then
        k3d image import "$IMAGE" --cluster "${context#k3d-}"
    elif command -v kind >/dev/null 2>&1; then
        kind load docker-image "$IMAGE"
    elif command -v k3d >/dev/null 2>&1; then
        k3d image import "$IMAGE"
    else
        die "neither kind nor k3d is installed: load $IMAGE into the nodes yourself and set WALARCH_E2E_BUILD=0"
    fi
}

install_operator() {
    kubectl apply -f deploy/crds/walarch.io.yaml
    kubectl wait --for=condition=Established --timeout=60s \
        crd/clusters.walarch.io crd/backups.walarch.io crd/scheduledbackups.walarch.io
    kubectl apply -f deploy/rbac.yaml
    kubectl apply -f deploy/operator.yaml
    kubectl -n "$OPERATOR_NS" set image deployment/walarch-operator operator="$IMAGE"
    # The same tag may hold a new build: restart so the pod runs it.
    kubectl -n "$OPERATOR_NS" rollout restart deployment/walarch-operator
    kubectl -n "$OPERATOR_NS" rollout status deployment/walarch-operator --timeout=180s
}

start_minio() {
    if kubectl get namespace "$NS" >/dev/null 2>&1; then
        log "removing the $NS namespace a previous run left"
        cleanup_namespace
    fi
    kubectl create namespace "$NS"
    apply minio.yaml
    k rollout status deployment/minio --timeout=180s
    k wait --for=condition=Complete job/make-bucket --timeout=180s
}

create_cluster() {
    apply credentials.yaml
    apply cluster.yaml
    wait_jsonpath cluster.walarch.io/main '{.status.phase}' Healthy 600 ||
        die "Cluster main is not Healthy after 10 min (phase: $(k get cluster.walarch.io/main -o jsonpath='{.status.phase}: {.status.phaseReason}' 2>/dev/null))"
    log "ready instances: $(k get cluster.walarch.io/main -o jsonpath='{.status.readyInstances}')"
}

primary_and_service() {
    local found pods others current
    found=$(primaries main)
    [[ -n "$found" && $(wc -l <<<"$found") -eq 1 ]] ||
        die "expected exactly one pod with walarch.io/role=primary, found: ${found:-none}"
    PRIMARY=$found
    log "primary: $PRIMARY"
    current=$(k get cluster.walarch.io/main -o jsonpath='{.status.currentPrimary}')
    [[ "$current" == "$PRIMARY" ]] || die "status.currentPrimary is '$current', the labelled primary $PRIMARY"
    until_true 60 service_selects main-rw "$PRIMARY" ||
        die "main-rw's ready endpoints are '$(ready_endpoints main-rw | tr '\n' ' ')', not $PRIMARY"
    pods=$(k get pods -l walarch.io/cluster=main -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort)
    others=$(grep -vx "$PRIMARY" <<<"$pods" || true)
    until_true 60 service_selects main-ro "$others" ||
        die "main-ro's ready endpoints are '$(ready_endpoints main-ro | tr '\n' ' ')', not the replicas '$(tr '\n' ' ' <<<"$others")'"
}

write_rows() {
    sql "$PRIMARY" "CREATE TABLE e2e (id bigserial PRIMARY KEY, phase text NOT NULL,
                     written timestamptz NOT NULL DEFAULT clock_timestamp())" >/dev/null
    insert_rows "$PRIMARY" before "$ROWS_BEFORE"
    [[ "$(row_counts "$PRIMARY")" == "$ROWS_BEFORE|0|0" ]] || die "rows: $(row_counts "$PRIMARY")"
}

# Polls the Backup until it completed; fails at once when it failed.
backup_done() {
    local phase
    phase=$(k get backup.walarch.io/main-backup-1 -o jsonpath='{.status.phase}' 2>/dev/null || true)
    case "$phase" in
        completed) return 0 ;;
        failed) die "the Backup failed: $(k get backup.walarch.io/main-backup-1 -o jsonpath='{.status.error}')" ;;
        *) return 1 ;;
    esac
}

take_backup() {
    apply backup.yaml
    until_true 600 backup_done ||
        die "the Backup did not complete within 10 min (phase '$(k get backup.walarch.io/main-backup-1 -o jsonpath='{.status.phase}')', error '$(k get backup.walarch.io/main-backup-1 -o jsonpath='{.status.error}')')"
    # kubectl wait --for=jsonpath, as a user would (it holds now).
    k wait backup.walarch.io/main-backup-1 --for=jsonpath='{.status.phase}'=completed --timeout=10s >/dev/null
    log "backup $(k get backup.walarch.io/main-backup-1 -o jsonpath='{.status.backupId} on {.status.instance}')"
    insert_rows "$PRIMARY" between "$ROWS_BETWEEN"
    # The noted time is whole seconds, on the server's clock: the rows above committed at
    # least 2 s before it, the next ones commit at least 2 s after it.
    sleep 2
    TARGET_TIME=$(sql "$PRIMARY" "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
    [[ "$TARGET_TIME" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]] ||
        die "cannot read the time from the primary: '$TARGET_TIME'"
    log "noted time: $TARGET_TIME"
    sleep 2
}

# Succeeds when SEGMENT (same timeline) is archived on POD.
archived() {
    [[ "$(sql "$1" "SELECT coalesce(last_archived_wal, '') >= '$2' FROM pg_stat_archiver")" == t ]]
}

write_more() {
    local segment
    insert_rows "$PRIMARY" after "$ROWS_AFTER"
    # Recovery to the noted time must see a commit after it: close the segment holding these
    # rows and wait until the archiver stored it.
    segment=$(sql "$PRIMARY" "SELECT pg_walfile_name(pg_switch_wal())")
    log "waiting for $segment to be archived"
    until_true 120 archived "$PRIMARY" "$segment" ||
        die "$segment is not archived after 2 min: $(sql "$PRIMARY" 'SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver')"
    [[ "$(row_counts "$PRIMARY")" == "$ROWS_BEFORE|$ROWS_BETWEEN|$ROWS_AFTER" ]] || die "rows: $(row_counts "$PRIMARY")"
}

failover() {
    local old=$PRIMARY counts
    log "deleting the primary pod $old"
    k delete pod "$old" --wait=false
    until_true 300 one_primary main "$old" ||
        die "no other pod became primary within 5 min (primary pods: '$(primaries main | tr '\n' ' ')')"
    PRIMARY=$FOUND
    log "new primary: $PRIMARY"
    [[ "$(sql "$PRIMARY" 'SELECT pg_is_in_recovery()')" == f ]] || die "$PRIMARY is labelled primary but in recovery"
    counts=$(row_counts "$PRIMARY")
    [[ "$counts" == "$ROWS_BEFORE|$ROWS_BETWEEN|$ROWS_AFTER" ]] ||
        die "rows on the new primary: $counts (before|between|after), expected $ROWS_BEFORE|$ROWS_BETWEEN|$ROWS_AFTER"
    # It takes writes (one synchronous replica is still there).
    sql "$PRIMARY" "INSERT INTO e2e (phase) VALUES ('failover')" >/dev/null
    until_true 60 service_selects main-rw "$PRIMARY" ||
        die "main-rw's ready endpoints are '$(ready_endpoints main-rw | tr '\n' ' ')', not the new primary $PRIMARY"
    OLD_PRIMARY=$old
}

pitr_clone() {
    local clone counts
    apply clone.yaml
    wait_jsonpath cluster.walarch.io/clone '{.status.phase}' Healthy 600 ||
        die "the clone is not Healthy after 10 min (phase: $(k get cluster.walarch.io/clone -o jsonpath='{.status.phase}: {.status.phaseReason}' 2>/dev/null))"
    until_true 60 one_primary clone || die "the clone has no single primary pod"
    clone=$FOUND
    counts=$(row_counts "$clone")
    log "clone $clone rows (before|between|after): $counts"
    [[ "$counts" == "$ROWS_BEFORE|$ROWS_BETWEEN|0" ]] ||
        die "the clone recovered to $TARGET_TIME has $counts rows (before|between|after), expected $ROWS_BEFORE|$ROWS_BETWEEN|0"
    [[ "$(sql "$clone" "SELECT count(*) FROM e2e WHERE phase = 'failover'")" == 0 ]] ||
        die "the clone has the row written after the failover"
}

# Succeeds when Cluster NAME is Refused and nothing was created for it.
refused_and_empty() { # NAME
    local name=$1 reason
    wait_jsonpath "cluster.walarch.io/$name" '{.status.phase}' Refused 120 ||
        die "Cluster $name is not Refused after 2 min (phase '$(k get "cluster.walarch.io/$name" -o jsonpath='{.status.phase}')')"
    reason=$(k get "cluster.walarch.io/$name" -o jsonpath='{.status.phaseReason}')
    log "$name: Refused: $reason"
    [[ "$reason" == *"source's repository"* ]] || die "Cluster $name is Refused for another reason: $reason"
    sleep 5 # a StatefulSet created by mistake would be there by now
    [[ -z "$(k get statefulset "$name" --ignore-not-found -o name)" ]] ||
        die "a StatefulSet $name was created for a refused Cluster"
    [[ -z "$(k get pods -l "walarch.io/cluster=$name" -o name)" ]] ||
        die "pods were created for the refused Cluster $name"
}

refuse_clone() {
    local out
    # Identical URLs: the CRD's CEL rule rejects the object at admission.
    if out=$(render refused-same.yaml | k apply -f - 2>&1); then
        log "the API server accepted refused-same (no CEL validation?): the operator must refuse it"
        refused_and_empty refused-same
    else
        [[ "$out" == *"must not archive into its source's repository"* ]] ||
            die "refused-same was rejected, but not for its repository: $out"
        log "refused-same: rejected at admission (CEL)"
    fi
    # The same location spelled differently, and a prefix inside the source: only the
    # operator can tell; it must refuse them.
    apply refused-slash.yaml
    refused_and_empty refused-slash
    apply refused-nested.yaml
    refused_and_empty refused-nested
}

rejoin() {
    wait_jsonpath cluster.walarch.io/main '{.status.phase}' Healthy 600 ||
        die "Cluster main is not Healthy again after 10 min (phase: $(k get cluster.walarch.io/main -o jsonpath='{.status.phase}: {.status.phaseReason}'))"
    until_true 60 labelled_replica "$OLD_PRIMARY" ||
        die "the old primary $OLD_PRIMARY is not labelled replica"
    [[ "$(row_counts "$OLD_PRIMARY")" == "$ROWS_BEFORE|$ROWS_BETWEEN|$ROWS_AFTER" ]] ||
        die "the rejoined $OLD_PRIMARY has rows $(row_counts "$OLD_PRIMARY")"
}

# ---- diagnostics and cleanup -----------------------------------------------------------------

diagnostics() {
    echo "---- diagnostics"
    k get clusters.walarch.io,backups.walarch.io,statefulsets,pods,services,endpointslices,leases -o wide 2>&1 || true
    k get clusters.walarch.io -o yaml 2>&1 | sed -n '/^  status:/,/^- apiVersion/p' | head -120 || true
    k get events --sort-by=.lastTimestamp 2>&1 | tail -40 || true
    echo "---- operator log (last 100 lines)"
    kubectl -n "$OPERATOR_NS" logs deployment/walarch-operator --tail=100 2>&1 || true
    local pod
    for pod in $(k get pods -l walarch.io/cluster -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do
        echo "---- $pod (last 40 lines)"
        k logs "$pod" -c postgres --tail=40 2>&1 || true
        k logs "$pod" -c postgres --tail=20 --previous 2>/dev/null || true
    done
}

cleanup_namespace() {
    # Clusters first, while the operator runs: their finalizer deletes the Leases.
    k delete clusters.walarch.io --all --timeout=120s >/dev/null 2>&1 || {
        echo "    cleanup: Clusters not deleted within 2 min; removing their finalizers" >&2
        local c
        for c in $(k get clusters.walarch.io -o name 2>/dev/null); do
            k patch "$c" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
        done
    }
    kubectl delete namespace "$NS" --timeout=300s >/dev/null 2>&1 ||
        echo "    cleanup: namespace $NS not deleted within 5 min" >&2
}

CURRENT=""
NEXT=0
on_exit() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n "$CURRENT" ]]; then
        echo "FAIL: $CURRENT: ${ABOUT[$CURRENT]}"
        ((rc != 0)) || rc=1
    fi
    local i
    for ((i = NEXT; i < ${#STEPS[@]}; i++)); do
        echo "NOT RUN: ${STEPS[$i]}: ${ABOUT[${STEPS[$i]}]}"
    done
    ((rc == 0)) || diagnostics
    if [[ "${WALARCH_E2E_KEEP:-}" == 1 ]]; then
        echo "WALARCH_E2E_KEEP=1: namespace $NS kept"
    elif kubectl get namespace "$NS" >/dev/null 2>&1; then
        cleanup_namespace
    fi
    if ((rc == 0)); then
        echo "tests/k8s: PASSED (${#STEPS[@]} steps)"
    else
        echo "tests/k8s: FAILED"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

echo "tests/k8s: context $(kubectl config current-context 2>/dev/null || echo '?'), image $IMAGE"
for ((NEXT = 0; NEXT < ${#STEPS[@]}; )); do
    CURRENT=${STEPS[$NEXT]}
    NEXT=$((NEXT + 1))
    echo "=== $CURRENT: ${ABOUT[$CURRENT]}"
    "$CURRENT"
    echo "PASS: $CURRENT"
    CURRENT=""
done
