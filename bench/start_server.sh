# Sourced by the bench scripts: start_server ARGS... starts $build/server/moe-server
# --host 127.0.0.1 --grpc-port 0 --http-port 0 ARGS..., waits (while it lives: a large
# checkpoint takes minutes to load) until both ports listen, and sets $server (its pid),
# $grpc_port and $http_port; an EXIT trap stops it.
start_server() {
  local log
  log=$(mktemp)
  "$build/server/moe-server" --host 127.0.0.1 --grpc-port 0 --http-port 0 "$@" > "$log" &
  server=$!
  # shellcheck disable=SC2064
  trap "kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f '$log'" EXIT
  until grep -q "http listening on" "$log"; do
    kill -0 "$server" 2>/dev/null || { echo "$0: moe-server exited" >&2; exit 1; }
    sleep 0.2
  done
  grpc_port=$(sed -n 's/.*grpc listening on .*:\([0-9]*\)$/\1/p' "$log")
  http_port=$(sed -n 's/.*http listening on .*:\([0-9]*\)$/\1/p' "$log")
}
