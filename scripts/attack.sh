#!/usr/bin/env bash
# Repeats the attack run of issue 15 against a built `triage` binary, with the real model: two
# tenants' keys (chat/agent/admin each) and the default no-key setup. Prints one line per finding,
# `ok` or `FAIL`, and exits non-zero when any fails. Not part of CI (it needs minutes of model time);
# run it by hand before a release:  scripts/attack.sh [target/release/triage]
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/triage}
[ -x "$BIN" ] || { echo "build it first: cargo build --release -p server"; exit 2; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
failed=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; failed=1; fi; }

start() { # start NAME ARGS...: a server on a free port, its base URL in $BASE
  local name=$1; shift
  "$BIN" serve --addr 127.0.0.1:0 --data-dir "$work/$name" --pack fixtures/demo-pack "$@" \
    >"$work/$name.out" 2>"$work/$name.err" &
  for _ in $(seq 600); do
    BASE=$(grep -o 'http://127[^ ]*' "$work/$name.out" 2>/dev/null | head -1)
    [ -n "$BASE" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/readyz")" = 200 ] && return 0
    sleep 1
  done
  echo "server $name did not start"; cat "$work/$name.err"; exit 2
}
j() { curl -s -H 'content-type: application/json' "$@"; }
code() { curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' "$@"; }

start keyed --api-key c=:chat --api-key g=:agent --api-key a=:admin \
  --api-key ac=acme:chat --api-key ag=acme:agent --api-key aa=acme:admin
K=$BASE
fire='冰箱冒烟了，有烧焦的味道'
check "1 a chat key cannot tie any text to an article" \
  '[ "$(code -H "authorization: Bearer c" -d "{\"solved_by_article\":\"kb-050\",\"message\":\"$fire\"}" $K/v1/feedback)" = 403 ]'
check "1 the fire report is still handed off" \
  '[ "$(j -H "authorization: Bearer c" -d "{\"text\":\"$fire\"}" $K/v1/deflect | grep -o "\"action\":\"[a-z]*\"")" = "\"action\":\"handoff\"" ]'
check "2 a chat key cannot relabel" \
  '[ "$(code -H "authorization: Bearer c" -d "{\"ticket_id\":\"X\",\"body\":\"$fire\",\"category\":\"billing.invoice\"}" $K/v1/feedback)" = 403 ]'
before=$(j -H 'authorization: Bearer g' -d '{"body":"Please issue a VAT invoice"}' $K/v1/triage | grep -o '"category":{"label":"[^"]*"')
for i in $(seq 50); do
  code -X PUT -H 'authorization: Bearer aa' -d "{\"body\":\"Please issue a VAT invoice for order $i\",\"category\":\"safety.hazard\",\"priority\":\"P0\"}" "$K/v1/tickets/P-$i" >/dev/null
done
code -X POST -H 'authorization: Bearer aa' "$K/v1/admin/retrain" >/dev/null
after=$(j -H 'authorization: Bearer g' -d '{"body":"Please issue a VAT invoice"}' $K/v1/triage | grep -o '"category":{"label":"[^"]*"')
check "3 one tenant's labels and retrain do not move another's decision ($before)" '[ "$before" = "$after" ]'
check "4 the chat's answers carry no phrasings" \
  '! j -H "authorization: Bearer c" -d "{\"text\":\"怎么申请退款？\"}" $K/v1/deflect | grep -q alt_questions'
check "5 a chat key cannot read, write, delete tickets, search or retrain" \
  '[ "$(code -H "authorization: Bearer c" $K/v1/tickets/T-000001)$(code -X PUT -H "authorization: Bearer c" -d "{\"body\":\"x\"}" $K/v1/tickets/x)$(code -X DELETE -H "authorization: Bearer c" $K/v1/tickets/T-000001)$(code -H "authorization: Bearer c" -d "{\"text\":\"x\"}" $K/v1/search)$(code -X POST -H "authorization: Bearer c" $K/v1/admin/retrain)" = 403403403403403 ]'
check "5 a tenant admin cannot retrain the default tenant" \
  '[ "$(j -X POST -H "authorization: Bearer aa" "$K/v1/admin/retrain?tenant=" | grep -o "\"tenant\":\"[a-z]*\"")" = "\"tenant\":\"acme\"" ]'
check "8 made-up methods do not grow /metrics" \
  'for m in FOO BAR $(head -c 3000 /dev/zero | tr "\0" X); do curl -s -o /dev/null -X $m $K/v1/pack; done; ! curl -s -H "authorization: Bearer a" $K/metrics | grep -q "method=\"FOO\""'
check "L /readyz shows no totals without the operator's key" '[ "$(curl -s $K/readyz)" = "{\"status\":\"ready\"}" ]'
check "L /metrics needs the operator's key" '[ "$(curl -s -o /dev/null -w "%{http_code}" $K/metrics)" = 401 ]'
check "L a 10^12 Content-Length is refused at once" \
  '[ "$(curl -s -m 5 -o /dev/null -w "%{http_code}" -H "authorization: Bearer g" -H "content-type: application/json" -H "content-length: 1000000000000" --data-binary @/dev/null $K/v1/triage)" = 413 ]'
check "L ids refuse .. / and bidi overrides" \
  '[ "$(code -H "authorization: Bearer g" "$K/v1/tickets/%2E%2E")$(code -H "authorization: Bearer g" "$K/v1/tickets/a%2Fb")$(code -H "authorization: Bearer g" "$K/v1/tickets/x%E2%80%AEy")" = 422422422 ]'
check "L pages send a CSP, X-Frame-Options and nosniff" \
  'h=$(curl -sI $K/chat); echo "$h" | grep -qi content-security-policy && echo "$h" | grep -qi "x-frame-options: deny" && echo "$h" | grep -qi nosniff'
check "7 a silent connection is closed at the header deadline" \
  'start=$(date +%s); timeout 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/${K##*:}; cat <&3 >/dev/null"; [ $(( $(date +%s) - start )) -lt 25 ]'

start open
O=$BASE
check "5 without keys: loopback only, and said at start" 'grep -q "no API keys configured" "$work/open.err"'
check "14 a text/plain body is refused" '[ "$(curl -s -o /dev/null -w "%{http_code}" -H "content-type: text/plain" -d "{\"body\":\"x\"}" $O/v1/triage)" = 415 ]'
check "14 another origin is refused" '[ "$(code -H "origin: http://evil.example" -d "{\"body\":\"x\"}" $O/v1/triage)" = 403 ]'
check "14 a rebinding host name is refused" '[ "$(curl -s -o /dev/null -w "%{http_code}" -H "host: evil.example" $O/v1/pack)" = 421 ]'
check "5 no keys on a public address is refused at start" \
  '! timeout 20 "$BIN" serve --addr 0.0.0.0:0 --data-dir "$work/x" --pack fixtures/demo-pack >/dev/null 2>&1'
check "L a key without a scope is refused at start" \
  '! timeout 20 "$BIN" serve --addr 127.0.0.1:0 --data-dir "$work/y" --api-key t=acme >/dev/null 2>&1'
exit $failed
