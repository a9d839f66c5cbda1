"""The one TLS policy of every listener the project runs (Mosquitto, nginx, MediaMTX): Mozilla's
"intermediate" profile without DHE (TLS 1.2 with ECDHE key exchange and AEAD ciphers only, and
TLS 1.3), in OpenSSL's names. The configuration files spell these lists out (they cannot import
them); tests/test_tls_policy.py checks that each file says exactly this and that each running
listener accepts these suites and refuses every other one its OpenSSL knows."""

from __future__ import annotations

TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)
TLS13_CIPHERSUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)
PROTOCOLS = ("TLSv1.2", "TLSv1.3")
