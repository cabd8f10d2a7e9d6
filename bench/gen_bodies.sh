#!/usr/bin/env bash
# Write the SOAP request bodies used by the benchmark into a folder:
#   1k.xml   one PushEvent, exactly the envelope from the brief (~0.5 KB)
#   64k.xml  a PushEvents batch padded with rtEvent elements to ~64 KB
#   1m.xml   the same batch padded to ~1 MB
#   10m.xml  the same batch padded to ~10 MB (the upload step)
# Usage: gen_bodies.sh OUTDIR
set -euo pipefail

out=${1:?usage: gen_bodies.sh OUTDIR}
mkdir -p "$out"

ENV_OPEN='<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:nms:rtEvent"><soapenv:Header/><soapenv:Body>'
ENV_CLOSE='</soapenv:Body></soapenv:Envelope>'

# Single event (SOAPAction "nms:rtEvent#PushEvent").
printf '%s' "$ENV_OPEN" \
  '<urn:PushEvent><urn:sessiontoken>mc/secret</urn:sessiontoken><urn:domEvent>' \
  '<rtEvent type="order" email="name@domain.com"><ctx><order id="1"/></ctx></rtEvent>' \
  '</urn:domEvent></urn:PushEvent>' "$ENV_CLOSE" > "$out/1k.xml"

# Batch of events (SOAPAction "nms:rtEvent#PushEvents"), padded up to about
# $1 bytes. Every event has the same length (fixed-width numbers), so the
# count is computed up front.
# shellcheck disable=SC2059  # $fmt is our own printf format
batch() {
  local target=$1 file=$2
  local head="$ENV_OPEN<urn:PushEvents><urn:sessiontoken>mc/secret</urn:sessiontoken><urn:domEventCollection><eventCollection>"
  local tail="</eventCollection></urn:domEventCollection></urn:PushEvents>$ENV_CLOSE"
  local fmt='<rtEvent type="order" email="name%07d@domain.com"><ctx><order id="%07d" currency="EUR" amount="%05d.00"/></ctx></rtEvent>'
  local one n i
  one=$(printf "$fmt" 0 0 0)
  n=$(( (target - ${#head} - ${#tail}) / ${#one} ))
  {
    printf '%s' "$head"
    for (( i = 1; i <= n; i++ )); do
      printf "$fmt" "$i" "$i" "$(( i % 100000 ))"
    done
    printf '%s' "$tail"
  } > "$file"
}

batch $((64 * 1024)) "$out/64k.xml"
batch $((1024 * 1024)) "$out/1m.xml"
batch $((10 * 1024 * 1024)) "$out/10m.xml"
