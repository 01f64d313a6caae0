# ruff: noqa: E501  (the scripts reproduce real log lines verbatim; wrapping them would change them)
"""The programs of the simulated tunnel stack: busybox shell scripts that log like
the real ones (FACTS §4).

They are baked into the stack image as ``/usr/local/bin/cloudflared`` and
``/usr/local/bin/mcp-proxy`` so a container's inspect document looks like the
real deployment's (``cloudflared tunnel --no-autoupdate run --url
http://localhost:8080``) and a container re-created from that document runs the
same program again.

cloudflared writes its console format (``<RFC3339> INF <message> key=value…``)
to stderr, as the real binary does; four ``Registered tunnel connection`` lines
mean healthy. At debug level (``TUNNEL_LOGLEVEL=debug``) it logs request URLs
and headers — which is exactly how secrets end up in real cloudflared logs;
``MCP_IR_CANARY`` puts a known secret there so redaction can be proven.

The proxy logs ``route configured`` per route of its config file on stdout and
the suspicious lines FACTS §4 lists (``no route for host``, ``IP validation
failed: … is not a private address``, ``tls handshake failed``) on stderr.

Environment read by both scripts (all optional except ``TUNNEL_TOKEN``):

- ``MCP_IR_SIM_INTERVAL``     seconds between periodic lines (default 1)
- ``MCP_IR_SIM_TUNNEL_ID`` / ``MCP_IR_SIM_DOMAIN``  shown in the lines
- ``MCP_IR_SIM_CONNECTIONS``  tunnel connections to register (cloudflared, default 4)
- ``MCP_IR_SIM_SUSPICIOUS``   ``1`` to log the suspicious proxy lines (default 1)
- ``MCP_IR_CANARY``           a secret written into both logs (debug lines)
"""

from __future__ import annotations

import hashlib

CLOUDFLARED_SCRIPT = r"""#!/bin/sh
# Simulated cloudflared (mcp-ir sandbox): cloudflared's console log format on stderr.
ts() { date -u +%Y-%m-%dT%H:%M:%SZ; }
log() { echo "$(ts) $*" >&2; }
uuid() { cat /proc/sys/kernel/random/uuid; }
interval="${MCP_IR_SIM_INTERVAL:-1}"
conns="${MCP_IR_SIM_CONNECTIONS:-4}"
tid="${MCP_IR_SIM_TUNNEL_ID:-unknown}"
domain="${MCP_IR_SIM_DOMAIN:-tunnel.invalid}"
url="http://localhost:8080"
while [ $# -gt 0 ]; do
  case "$1" in --url) url="$2"; shift ;; esac
  shift
done
if [ -z "$TUNNEL_TOKEN" ]; then
  log 'ERR "cloudflared tunnel run" requires the ID or name of the tunnel to run as the last command line argument or in the configuration file.'
  exit 1
fi
term() { log "INF Initiating graceful shutdown due to signal terminated ..."; exit 0; }
trap term TERM INT
log "INF Starting tunnel tunnelID=$tid"
log "INF Version 2026.11.0 (Checksum 4f9c0a3e2b7d1f6a8c5e9b0d3f2a1c7e6b5d4a3f2e1d0c9b8a7f6e5d4c3b2a1f)"
log "INF GOOS: linux, GOVersion: go1.24.4, GoArch: amd64"
if [ -n "$MCP_IR_CANARY" ]; then
  log "INF Settings: map[loglevel:debug no-autoupdate:true token:$TUNNEL_TOKEN url:$url]"
else
  log "INF Settings: map[no-autoupdate:true token:***** url:$url]"
fi
log "INF cloudflared will not automatically update if installed by a package manager."
log "INF Generated Connector ID: $(uuid)"
log "INF Initial protocol quic"
log "INF ICMP proxy will use 172.18.0.3 as source for IPv4"
log "INF Starting metrics server on [::]:20241/metrics"
set -- "198.41.200.13 ams01" "198.41.192.107 fra08" "198.41.200.193 ams06" "198.41.192.47 fra13"
i=0
for edge in "$@"; do
  [ "$i" -ge "$conns" ] && break
  ip="${edge% *}"; loc="${edge#* }"
  log "INF Registered tunnel connection connIndex=$i connection=$(uuid) event=0 ip=$ip location=$loc protocol=quic"
  i=$((i + 1))
done
if [ "$i" -lt 4 ]; then
  log "ERR Unable to establish connection with Cloudflare edge error=\"DialContext error: dial udp 198.41.192.167:7844: connect: network is unreachable\" connIndex=$i event=0 ip=198.41.192.167"
fi
n=0
while true; do
  if [ -n "$MCP_IR_CANARY" ]; then
    log "DBG POST https://mcp.$domain/mcp HTTP/1.1 connIndex=$((n % 4)) content-length=112 event=1 headers={\"Accept\":[\"application/json, text/event-stream\"],\"Authorization\":[\"Bearer $MCP_IR_CANARY\"],\"Content-Type\":[\"application/json\"]} host=mcp.$domain ingressRule=0 originService=$url path=/mcp"
    log "DBG POST https://mcp.$domain/mcp HTTP/1.1 connIndex=$((n % 4)) content-length=0 event=1 ingressRule=0 originService=$url path=/mcp status=200 OK"
  fi
  n=$((n + 1))
  sleep "$interval" & wait $!
done
"""

PROXY_SCRIPT = r"""#!/bin/sh
# Simulated mcp-proxy (mcp-ir sandbox): routes from its config, suspicious lines on stderr.
ts() { date -u +%Y-%m-%dT%H:%M:%SZ; }
out() { echo "$(ts) $*"; }
err() { echo "$(ts) $*" >&2; }
interval="${MCP_IR_SIM_INTERVAL:-1}"
domain="${MCP_IR_SIM_DOMAIN:-tunnel.invalid}"
config=/etc/mcp-gateway/config.yaml
while [ $# -gt 0 ]; do
  case "$1" in --config) config="$2"; shift ;; esac
  shift
done
term() { out "INFO shutting down signal=terminated"; exit 0; }
trap term TERM INT
if [ ! -r "$config" ]; then
  err "ERROR open $config: no such file or directory"
  exit 1
fi
out "INFO starting mcp-proxy version=0.9.3 config=$config"
routes=$(awk '$1 == "-" && $2 == "host:" {h = $3} $1 == "upstream:" {print h "," $2}' "$config")
for r in $routes; do
  out "INFO route configured host=${r%%,*} upstream=${r#*,}"
done
cert=$(awk '$1 == "cert_file:" {print $2}' "$config")
key=$(awk '$1 == "key_file:" {print $2}' "$config")
if [ -n "$key" ] && [ ! -r "$key" ]; then
  err "ERROR open $key: permission denied"
else
  out "INFO tls server certificate loaded cert_file=$cert"
fi
out "INFO listening addr=:8080 tls=true"
if [ -n "$MCP_IR_CANARY" ]; then
  out "DEBUG upstream request host=mcp.$domain method=POST path=/mcp headers=map[Authorization:[Bearer $MCP_IR_CANARY]]"
fi
suspicious() {
  err "WARN no route for host host=admin.$domain remote=10.0.7.21:51234"
  err "WARN IP validation failed: 203.0.113.7 is not a private address upstream=http://203.0.113.7:8080"
  err "ERROR tls handshake failed remote=10.0.7.21:51240 error=\"remote error: tls: bad certificate\""
}
[ "${MCP_IR_SIM_SUSPICIOUS:-1}" = "1" ] && suspicious
n=0
while true; do
  first="${routes%% *}"
  out "INFO request host=${first%%,*} method=POST path=/mcp status=200 duration_ms=$((12 + n % 7))"
  n=$((n + 1))
  if [ "${MCP_IR_SIM_SUSPICIOUS:-1}" = "1" ] && [ $((n % 5)) -eq 0 ]; then suspicious; fi
  sleep "$interval" & wait $!
done
"""

FILES: dict[str, bytes] = {
    "/usr/local/bin/cloudflared": CLOUDFLARED_SCRIPT.encode(),
    "/usr/local/bin/mcp-proxy": PROXY_SCRIPT.encode(),
}
"""Files baked into the stack image (path in the image → content)."""


def content_tag() -> str:
    """A tag derived from the scripts, so an edited script gets a new image."""
    digest = hashlib.sha256()
    for path in sorted(FILES):
        digest.update(path.encode() + b"\0" + FILES[path] + b"\0")
    return digest.hexdigest()[:12]
