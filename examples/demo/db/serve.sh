#!/bin/sh
# The demo's database. The first start writes the data (16 MB and a table of 10 000 rows); every
# start, on any host, goes on appending a tick to /data/ticks ten times a second (numbered on
# from the last one there) and answers every connection on port 7000 with a summary of /data.
set -e
if [ ! -f /data/rows ]; then
    dd if=/dev/urandom of=/data/blob bs=1M count=16 2>/dev/null
    seq 1 10000 | sed 's/^/row-/' > /data/rows
fi
touch /data/ticks
(
    i=$(wc -l < /data/ticks)
    while true; do i=$((i + 1)); echo "$i" >> /data/ticks; sleep 0.1; done
) &
while true; do sh /summary.sh | nc -l -p 7000; done
