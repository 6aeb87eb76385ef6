#!/bin/sh
# A Powerstrip pre-hook adapter in busybox sh, served by busybox httpd as CGI: it labels every
# container create with "example.adapter": "container". Powerstrip sends
#   {"PowerstripProtocolVersion":1,"Type":"pre-hook","ClientRequest":{"Method":…,"Request":…,"Body":"…"}}
# and takes back {"PowerstripProtocolVersion":1,"ModifiedClientRequest":{…}}. The create body
# travels as a JSON string, so its quotes are escaped (\").
request=$(head -c "${CONTENT_LENGTH:-0}")
client=$(printf '%s' "$request" | sed 's/^.*"ClientRequest"://; s/}$//')
label='\\"example.adapter\\":\\"container\\"'
client=$(printf '%s' "$client" | sed "s/\\\\\"Labels\\\\\":{}/\\\\\"Labels\\\\\":{$label}/; t; s/\\\\\"Labels\\\\\":{/\\\\\"Labels\\\\\":{$label,/")
printf 'Content-Type: application/json\r\n\r\n'
printf '{"PowerstripProtocolVersion":1,"ModifiedClientRequest":%s}\n' "$client"
