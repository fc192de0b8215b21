#!/bin/sh
# Runs nginx in the foreground with the shipped site (deploy/nginx-natter.conf) on
# loopback, for tests/nginx.rs and tests/browser/tls.test.mjs:
#   nginx-for-tests.sh DIR HTTPS_PORT NATTER_HTTP_PORT NATTER_WS_PORT CERT KEY HTTP_PORT [HTTP_PORT2 WS_PORT2]
# With HTTP_PORT2 and WS_PORT2, each upstream gets a second server line and the
# socket's upstream hashes by client address: two natter instances behind one name,
# as docs/DEPLOY.md's rolling upgrade has them.
# Only ports, certificate paths and the name change; every substitution must apply,
# so a site file that drifts fails the tests instead of testing something else.
# The script execs nginx (master_process off): its PID is the one to stop.
set -eu
dir=$1 port=$2 http=$3 ws=$4 cert=$5 key=$6 plain=$7 http2=${8:-} ws2=${9:-}
site="$(dirname "$0")/../deploy/nginx-natter.conf"
mkdir -p "$dir"
sub() { # sub FROM TO: replace a literal line fragment, failing if it is not there
    grep -qF -- "$1" "$dir/site.conf" || { echo "nginx-for-tests: '$1' not in $site" >&2; exit 1; }
    FROM=$1 TO=$2 perl -pi -e 's/\Q$ENV{FROM}\E/$ENV{TO}/g' "$dir/site.conf"
}
cp "$site" "$dir/site.conf"
if [ -n "$http2" ]; then
    sub "server 127.0.0.1:8080 max_fails=0;" "server 127.0.0.1:$http max_fails=0; server 127.0.0.1:$http2 max_fails=0;"
    sub "server 127.0.0.1:8081 max_fails=0;" "hash \$remote_addr consistent; server 127.0.0.1:$ws max_fails=0; server 127.0.0.1:$ws2 max_fails=0;"
else
    sub "server 127.0.0.1:8080 max_fails=0;" "server 127.0.0.1:$http max_fails=0;"
    sub "server 127.0.0.1:8081 max_fails=0;" "server 127.0.0.1:$ws max_fails=0;"
fi
sub "listen 443 ssl http2;" "listen 127.0.0.1:$port ssl http2;"
sub "listen [::]:443 ssl http2;" ""
sub "listen 80;" "listen 127.0.0.1:$plain;"
sub "listen [::]:80;" ""
sub "/etc/letsencrypt/live/chat.example.com/fullchain.pem" "$cert"
sub "/etc/letsencrypt/live/chat.example.com/privkey.pem" "$key"
sub "server_name chat.example.com;" "server_name localhost 127.0.0.1;"
sub "access_log /var/log/nginx/natter.access.log" "access_log $dir/access.log"
cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $dir/site.conf;
}
CONF
exec nginx -p "$dir" -c "$dir/nginx.conf"
