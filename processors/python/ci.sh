#!/usr/bin/env bash
# The reference processor in CI: builds it (a virtual environment from
# requirements.txt, the code generated from proto/ by generate.sh), runs it
# against `dsr conformance`, which must pass it, then runs each flawed
# variant of tests/flawed.py, which the kit must fail with the check that
# names the flaw. Needs the `dsr` binary: DSR (default target/debug/dsr).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
dsr="${DSR:-$root/target/debug/dsr}"
[ -x "$dsr" ] || { echo "no dsr binary at $dsr (cargo build, or set DSR)"; exit 1; }
python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$here/generate.sh"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
"$dsr" keys create --out "$work/keys" >/dev/null
trust=()
for s in erasure discovery export; do
  trust+=(--trust "dsr-$s=$work/keys/trust/dsr-$s-jwks.json")
done
person="email:$("$here/.venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["debtors"][0]["email"])' "$here/sample-data.json")"

free_port() { "$here/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run NAME EXPECT [program...]: serves one processor on a fresh database,
# runs the kit against it, and checks the outcome.
run() {
  local name="$1" expect="$2"; shift 2
  local port; port="$(free_port)"
  mkdir -p "$work/$name"
  "$here/.venv/bin/python" "$@" --listen "127.0.0.1:$port" --database "$work/$name/p.db" \
    --signing-key "$work/$name/receipt.pem" --seed "$here/sample-data.json" "${trust[@]}" \
    >"$work/$name/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  set +e
  "$dsr" conformance "http://127.0.0.1:$port" --keys "$work/keys" --system-id collections-gb \
    --identity "$person" --operation-timeout-secs 30 >"$work/$name/out" 2>&1
  local rc=$?
  set -e
  if [ "$expect" = pass ]; then
    if [ $rc -ne 0 ] || ! grep -q ' 0 failed' "$work/$name/out"; then
      cat "$work/$name/out" "$work/$name/log"; echo "FAIL: the reference processor does not pass"; exit 1
    fi
    echo "reference processor: $(tail -1 "$work/$name/out")"
  else
    if [ $rc -eq 0 ] || ! grep -E "^$expect +FAIL " "$work/$name/out" >/dev/null; then
      cat "$work/$name/out"; echo "FAIL: the kit passed the $name flaw, or failed it elsewhere than '$expect'"; exit 1
    fi
    echo "$name: refused: $(grep -E "^$expect +FAIL " "$work/$name/out" | sed -E 's/ +FAIL +/: /')"
  fi
}

run reference pass "$here/processor.py"
run no-token-check "A call without a token is UNAUTHENTICATED" "$here/tests/flawed.py" no-token-check
run any-audience "A token for another audience is refused" "$here/tests/flawed.py" any-audience
run replay "Erase twice with one key gives one receipt" "$here/tests/flawed.py" replay
run bad-signature "The receipt verifies against Describe's keys and the instruction" "$here/tests/flawed.py" bad-signature
