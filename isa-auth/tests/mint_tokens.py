"""Mints test tokens with PyJWT and cryptography (an implementation that is not ours).

usage: mint_tokens.py ISSUER AUDIENCE HS_SECRET
Prints JSON: {"jwks": {...}, "jwks_rotated": {...}, "tokens": {name: token}}.
"""

import base64
import hashlib
import hmac
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

issuer, audience, hs_secret = sys.argv[1], sys.argv[2], sys.argv[3]
now = int(time.time())


def jwk(public_key, algorithm, kid, alg):
    key = json.loads(algorithm.to_jwk(public_key))
    key.update({"kid": kid, "alg": alg, "use": "sig"})
    return key


rsa1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec1 = ec.generate_private_key(ec.SECP256R1())
jwks = {"keys": [jwk(rsa1.public_key(), RSAAlgorithm, "rsa-1", "RS256"), jwk(ec1.public_key(), ECAlgorithm, "ec-1", "ES256")]}
rotated = {"keys": jwks["keys"] + [jwk(rsa2.public_key(), RSAAlgorithm, "rsa-2", "RS256")]}


def claims(**extra):
    base = {"sub": "alice", "iss": issuer, "aud": audience, "iat": now, "exp": now + 3600, "scope": "files:read"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_key_bytes(key_bytes, payload, kid):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(key_bytes, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


rsa1_public_pem = rsa1.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
valid_rs = jwt.encode(claims(), rsa1, algorithm="RS256", headers={"kid": "rsa-1"})
header, payload, signature = valid_rs.split(".")
flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]

tokens = {
    "valid_rs256": valid_rs,
    "valid_es256": jwt.encode(claims(sub="carol"), ec1, algorithm="ES256", headers={"kid": "ec-1"}),
    "valid_admin": jwt.encode(claims(sub="root", scope="admin"), rsa1, algorithm="RS256", headers={"kid": "rsa-1"}),
    "valid_supabase": jwt.encode(
        {"sub": "bob", "aud": "authenticated", "role": "authenticated", "exp": now + 3600, "email": "bob@example.com"},
        hs_secret,
        algorithm="HS256",
    ),
    "rotated_rs256": jwt.encode(claims(sub="dave"), rsa2, algorithm="RS256", headers={"kid": "rsa-2"}),
    "alg_none": jwt.encode(claims(), None, algorithm="none"),
    "hs_rs_confusion": hs256_with_key_bytes(rsa1_public_pem, claims(), "rsa-1"),
    "expired": jwt.encode(claims(exp=now - 3600), rsa1, algorithm="RS256", headers={"kid": "rsa-1"}),
    "not_yet_valid": jwt.encode(claims(nbf=now + 3600), rsa1, algorithm="RS256", headers={"kid": "rsa-1"}),
    "wrong_issuer": jwt.encode(claims(iss="https://evil.example/"), rsa1, algorithm="RS256", headers={"kid": "rsa-1"}),
    "wrong_audience": jwt.encode(claims(aud="https://someone-else.example/api"), rsa1, algorithm="RS256", headers={"kid": "rsa-1"}),
    "supabase_wrong_audience": jwt.encode({"sub": "bob", "aud": "anon", "exp": now + 3600}, hs_secret, algorithm="HS256"),
    "bad_signature": f"{header}.{payload}.{flipped}",
    "unknown_kid": jwt.encode(claims(), rsa1, algorithm="RS256", headers={"kid": "no-such-key"}),
    "malformed_header": "eyJub3QganNvbg.eyJzdWIiOiJhbGljZSJ9.c2ln",
    "huge": jwt.encode(claims(padding="x" * 100_000), rsa1, algorithm="RS256", headers={"kid": "rsa-1"}),
}
print(json.dumps({"jwks": jwks, "jwks_rotated": rotated, "tokens": tokens}))
