#!/usr/bin/env bash
# System packages the test suite needs beyond the Python venv:
#   chromium + chromium-driver  -> headless dashboard tests (tests/test_dashboard_*.py)
#   prometheus                  -> promtool, to check /metrics and deploy/prometheus rules
#   prometheus-node-exporter    -> a real exporter for the sidecar's scrape bridge (tests/test_producer_scrape.py)
#   openssl                     -> a self-signed certificate for the TLS health-check test
# Debian bookworm package names (checked with apt-cache policy). Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${#need[@]}" -eq 0 ]; then
    echo "system deps already present: chromium, chromedriver, promtool, prometheus-node-exporter, openssl"
    exit 0
fi
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium chromium-driver prometheus prometheus-node-exporter openssl
# The prometheus package starts a server under systemd where one exists; tests need only promtool.
command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v promtool >/dev/null
command -v prometheus-node-exporter >/dev/null && command -v openssl >/dev/null
echo "installed: $(chromium --version 2>/dev/null | head -1); $(promtool --version 2>&1 | head -1)"
