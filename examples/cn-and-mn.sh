#!/usr/bin/env bash
# A correspondent node and a mobile node in two network namespaces joined by a veth pair:
# `kbmfast serve` in one, `kbmfast mn` in the other; the mobile node registers, refreshes once,
# de-registers, and the correspondent's binding cache is shown before and after. Run as root
# (network namespaces, CAP_NET_RAW) with kbmfast installed; everything it creates is removed
# on exit. Usage: sudo examples/cn-and-mn.sh [KBMFAST]   (default: kbmfast on PATH)
set -euo pipefail
KBMFAST=${1:-kbmfast}
tag=$$
CN_NS=kbm-ex-cn-$tag MN_NS=kbm-ex-mn-$tag CN_IF=kxc$tag MN_IF=kxm$tag
HOME_ADDR=2001:db8:1::1 COA=2001:db8:2::200 CN=2001:db8:3::300
work=$(mktemp -d)
serve_pid=

cleanup() {
    [ -n "$serve_pid" ] && kill -TERM "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
    ip netns del "$CN_NS" 2>/dev/null || true
    ip netns del "$MN_NS" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The kernel has no Mobile IPv6: it answers a Home Address option (CN side) and a type 2
# routing header (MN side) with ICMPv6 Parameter Problem. Keep those errors off the wire.
nft_rule='table inet kbmfast {
  chain output {
    type filter hook output priority 0; policy accept;
    icmpv6 type parameter-problem drop
  }
}'

ip netns add "$CN_NS"
ip netns add "$MN_NS"
ip link add "$CN_IF" type veth peer name "$MN_IF"
ip link set "$CN_IF" netns "$CN_NS"
ip link set "$MN_IF" netns "$MN_NS"
for side in "$CN_NS $CN_IF $CN" "$MN_NS $MN_IF $COA"; do
    set -- $side
    ip -n "$1" link set lo up
    ip -n "$1" link set "$2" up
    ip -n "$1" -6 addr add "$3/48" dev "$2" nodad
    echo "$nft_rule" | ip netns exec "$1" nft -f -
done
ip -n "$MN_NS" -6 route add "$CN" dev "$MN_IF"  # the correspondent is on the link

# One key file for both ends (a real deployment gives each mobile node its own Kbm).
"$KBMFAST" keys generate --peers 1 --prefix 2001:db8:1::/64 --out "$work/cn.keys" >/dev/null

echo "== kbmfast serve in $CN_NS on $CN_IF ($CN)"
ip netns exec "$CN_NS" "$KBMFAST" serve -i "$CN_IF" --keys "$work/cn.keys" --state "$work/cn.state" \
    --snapshot "$work/snapshot.json" 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 100); do grep -q "serving on" "$work/serve.log" && break; sleep 0.1; done
grep -q "serving on" "$work/serve.log" || { cat "$work/serve.log"; exit 1; }

bindings() {  # the correspondent's binding cache, from its SIGUSR1 snapshot
    rm -f "$work/snapshot.json"
    kill -USR1 "$serve_pid"
    for _ in $(seq 100); do [ -s "$work/snapshot.json" ] && break; sleep 0.05; done
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("   bindings:", json.dumps(s.get("bindings")))' "$work/snapshot.json"
}

echo "== kbmfast mn in $MN_NS on $MN_IF: home $HOME_ADDR at $COA, correspondent $CN"
ip netns exec "$MN_NS" "$KBMFAST" mn -i "$MN_IF" --home "$HOME_ADDR" --care-of "$COA" --correspondent "$CN" \
    --keys "$work/cn.keys" --state "$work/mn.state" --count 2 --interval 2 > >(tee "$work/mn.log") &
mn_pid=$!
for _ in $(seq 100); do grep -q "^registered" "$work/mn.log" 2>/dev/null && break; sleep 0.1; done
echo "== while registered:"
bindings
wait "$mn_pid" || { echo "kbmfast mn failed"; exit 1; }
echo "== after the de-registration:"
bindings
kill -TERM "$serve_pid"
wait "$serve_pid"
serve_pid=
echo "== kbmfast serve's log:"
sed 's/^/   /' "$work/serve.log"
