#!/bin/sh
# Makes the NATS cluster's TLS certificates in $1 (default /certs), once: a CA and
# one server certificate for nats-0, nats-1, nats-2 and localhost, which the nodes
# present to clients and to each other (routes). Run by the nats-certs service of
# docker-compose.yml before NATS starts; an existing set is kept. Clients verify
# the servers with ca.pem (NATS_CA).
set -eu
dir=${1:-/certs}
days=${CERT_DAYS:-825}
cd "$dir"
if [ -s ca.pem ] && [ -s server.pem ] && [ -s server-key.pem ]; then
  echo "certificates present in $dir"
  exit 0
fi
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/CN=xygroup NATS CA" -keyout ca-key.pem -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=nats" \
  -keyout server-key.pem -out server.csr
cat > server.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:nats-0,DNS:nats-1,DNS:nats-2,DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
  -extfile server.ext -out server.pem
rm -f server.csr server.ext ca.srl ca-key.pem
# The nodes read the key; ca.pem is public.
chmod 0644 ca.pem server.pem
chmod 0600 server-key.pem
echo "certificates made in $dir"
