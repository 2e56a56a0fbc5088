#!/usr/bin/env bash
# Cost of OpenAPI request validation, end to end, on the shared harness (../shared/bench):
# the same Rampart config without and with an `openapi` spec that declares the harness's two
# requests (GET /api/v1/users/{id} with its query parameters; POST /api/v1/orders with its
# ~0.6 KB JSON order body, validated against a strict schema). Both Rampart instances run side
# by side with nginx-proxy in one run of the harness: 1 worker thread each, wrk 1 thread, 32
# connections, loopback only, every run bounded.
#
#   bench/openapi.sh                      # DURATION=8 REPEAT=1 by default
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
WORK="$(mktemp -d /tmp/rampart-oasbench.XXXXXX)"
cargo build --release -p rampart --manifest-path "$ROOT/Cargo.toml" >&2
BIN="$ROOT/target/release/rampart"

cat > "$WORK/spec.yaml" <<'YAML'
openapi: 3.1.0
info: { title: harness API, version: "1" }
paths:
  /api/v1/users/{id}:
    get:
      operationId: getUser
      parameters:
        - { name: id, in: path, required: true, schema: { type: integer, minimum: 1 } }
        - name: fields
          in: query
          style: form
          explode: false
          schema: { type: array, maxItems: 10, items: { type: string, enum: [name, email, plan, created] } }
        - { name: expand, in: query, schema: { type: string, enum: [orders, invoices] } }
        - { name: page, in: query, schema: { type: integer, minimum: 1, maximum: 1000 } }
      responses: { "200": { description: ok } }
  /api/v1/orders:
    post:
      operationId: createOrder
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Order" }
      responses: { "201": { description: created }, "200": { description: ok } }
components:
  schemas:
    Order:
      type: object
      additionalProperties: false
      required: [customer, shipping, items, currency]
      properties:
        id: { type: string, readOnly: true }
        customer:
          type: object
          additionalProperties: false
          required: [id, email]
          properties:
            id: { type: string, pattern: "^c_[0-9]{1,12}$" }
            name: { type: string, maxLength: 100 }
            email: { type: string, format: email, maxLength: 120 }
            phone: { type: string, maxLength: 20 }
        shipping:
          type: object
          additionalProperties: false
          required: [line1, city, country]
          properties:
            line1: { type: string, maxLength: 120 }
            line2: { type: string, maxLength: 120 }
            city: { type: string, maxLength: 80 }
            postal_code: { type: string, maxLength: 12 }
            country: { type: string, minLength: 2, maxLength: 2 }
        items:
          type: array
          minItems: 1
          maxItems: 50
          items:
            type: object
            additionalProperties: false
            required: [sku, qty]
            properties:
              sku: { type: string, pattern: "^SKU-[0-9]{5}$" }
              name: { type: string, maxLength: 120 }
              qty: { type: integer, minimum: 1, maximum: 100 }
              unit_price: { type: number, minimum: 0 }
        coupon: { type: string, maxLength: 20 }
        currency: { type: string, enum: [USD, EUR, GBP] }
        gift: { type: boolean }
        notes: { type: string, maxLength: 500 }
YAML

. "$ROOT/bench/lib.sh"
conf() { # $1 port, $2 openapi yes/no
  bench_conf "$1"
  [[ "$2" == yes ]] && printf '    openapi:\n      spec: %s\n      responses: off\n' "$WORK/spec.yaml"
  return 0
}
conf 28497 no > "$WORK/plain.yaml"
conf 28498 yes > "$WORK/openapi.yaml"
"$BIN" check -c "$WORK/plain.yaml" >&2 && "$BIN" check -c "$WORK/openapi.yaml" >&2

start_pair "$WORK/plain.yaml" 28497 "$WORK/openapi.yaml" 28498
# Both requests of the harness must pass validation, or the comparison means nothing.
for path in "/api/v1/users/42?fields=name,email,plan&expand=orders&page=2"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api.example.com' "http://127.0.0.1:28498$path")
  [[ $code == 200 ]] || { echo "GET validation refused the harness request ($code)" >&2; exit 1; }
done
body=$(sed -n 's/^wrk.body = \[\[\(.*\)\]\]$/\1/p' "$SHARED/wrk/post_json.lua")
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api.example.com' -H 'content-type: application/json' \
  --data-binary "$body" "http://127.0.0.1:28498/api/v1/orders")
[[ $code == 200 ]] || { echo "POST validation refused the harness body ($code)" >&2; exit 1; }

TARGETS="rampart=http://127.0.0.1:28497 rampart-openapi=http://127.0.0.1:28498 nginx-proxy=http://127.0.0.1:28481" \
  DURATION="${DURATION:-8}" STARTUP_BENCH=0 "$SHARED/run.sh"
