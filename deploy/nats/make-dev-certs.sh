#!/usr/bin/env bash
# Make a throw-away CA and certificates for trying TLS locally and in tests.
# NOT for production: the CA key sits next to the certs, unencrypted.
#
#   deploy/nats/make-dev-certs.sh [OUT_DIR]        (default: ./certs)
#
# Writes (PEM, EC P-256):
#   ca.pem ca-key.pem                 the dev CA
#   server.pem server-key.pem         nats-server: client port and routes
#                                     (serverAuth + clientAuth: routes are mutual TLS)
#   <role>.pem <role>-key.pem         client certs for mutual TLS, CN=<role>, for
#                                     producer, processor, sinks, admin
# Extra server names (DNS or IP) can be added with SW_CERT_SANS="DNS:nats.example.org,IP:10.0.0.5".
set -euo pipefail

out="${1:-./certs}"
days="${SW_CERT_DAYS:-30}"
mkdir -p "$out"
cd "$out"
umask 077

command -v openssl >/dev/null || { echo "error: openssl not found on PATH" >&2; exit 2; }

sans="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:n1,DNS:n2,DNS:n3,DNS:nats,DNS:nats.swarmwatch.svc,DNS:nats.swarmwatch.svc.cluster.local,DNS:*.nats.swarmwatch.svc,DNS:*.nats.swarmwatch.svc.cluster.local,DNS:*.nats-headless.swarmwatch.svc,DNS:*.nats-headless.swarmwatch.svc.cluster.local"
if [[ -n "${SW_CERT_SANS:-}" ]]; then
  sans="$sans,$SW_CERT_SANS"
fi

key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }

# CA
key ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days "$days" -subj "/O=swarmwatch dev/CN=swarmwatch dev CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem

sign() {  # name cn eku san
  local name="$1" cn="$2" eku="$3" san="$4" ext
  ext="$(mktemp)"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } >"$ext"
  key "$name-key.pem"
  openssl req -new -key "$name-key.pem" -subj "/O=swarmwatch dev/CN=$cn" -out "$name.csr"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 -days "$days" \
    -extfile "$ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$ext"
}

sign server nats-server "serverAuth,clientAuth" "$sans"
for role in producer processor sinks admin; do
  sign "$role" "$role" "clientAuth" ""
done
rm -f ca.srl
chmod 600 ./*-key.pem
chmod 644 ca.pem server.pem producer.pem processor.pem sinks.pem admin.pem
echo "dev certificates in $(pwd) (valid $days days)" >&2
