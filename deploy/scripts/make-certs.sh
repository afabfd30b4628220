#!/usr/bin/env bash
# Create a private CA and the SuperLink's TLS certificate, signed by it.
#   make-certs.sh OUT_DIR HOST [HOST...]
# HOSTs are the names/addresses clients use to reach the SuperLink (IP addresses and DNS
# names both work); each becomes a subjectAltName. Writes ca.crt (give it to every
# SuperNode and workstation), ca.key (keep offline), server.crt and server.key (SuperLink).
set -euo pipefail
source "$(dirname "$0")/env.sh"
[ $# -ge 2 ] || die "usage: make-certs.sh OUT_DIR HOST [HOST...]"
out=$1; shift
mkdir -p "$out"
san=""
for host in "$@"; do
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san+="IP:$host,"; else san+="DNS:$host,"; fi
done
san=${san%,}
days=${CERT_DAYS:-365}
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -sha256 -keyout "$out/ca.key" -out "$out/ca.crt" \
  -subj "/CN=fedkt-federation-ca" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$out/server.key" -out "$out/server.csr" -subj "/CN=$1" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$san" > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial -days "$days" \
  -sha256 -extfile "$out/server.ext" -out "$out/server.crt" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext" "$out/ca.srl"
chmod 600 "$out/ca.key" "$out/server.key"
echo "CA and SuperLink certificate for $* in $out"
