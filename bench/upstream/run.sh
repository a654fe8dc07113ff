#!/bin/sh
# Writes an nginx config for $PORT outside the read-only release folder and
# runs nginx in the foreground, one worker.
set -e
dir=$(mktemp -d /tmp/baton-bench-upstream.XXXXXX)
mkdir -p "$dir/logs"
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$PORT;
    location /health { return 200 "ok\n"; }
    location / { return 200 "hello from the upstream\n"; }
  }
}
CONF
exec nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
