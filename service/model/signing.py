"""Signed versions: an Ed25519 signature of a version's SHA256SUMS, which lists the sha256 of every file.

The publisher (training, retraining, `propensity registry sign`) holds the private key; a serving worker
holds only the public one, so a replica that is broken into cannot sign a version for the others. Keys are
PEM files (Swarm secrets in the stack): `propensity registry keygen DIR` writes a pair. With a public key
configured a worker refuses any version whose SIGNATURE is missing, made with another key, or does not
match SHA256SUMS as it is now; the sha256 sums then tie each file to the signature.

Ed25519 from `cryptography` (pyca), the library most Python projects already trust for this; HMAC would
need the same secret on every replica, which is what a signature avoids.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from service.errors import ArtifactIntegrityError
from service.model.artifact_files import CHECKSUMS_FILE

SIGNATURE_FILE = "SIGNATURE"
ALGORITHM = "ed25519"
PRIVATE_KEY = "signing-key.pem"
PUBLIC_KEY = "verify-key.pem"


def _private_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(_key_bytes(path), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ArtifactIntegrityError(f"{path}: not an Ed25519 private key")
    return key


def _public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(_key_bytes(path))
    if not isinstance(key, Ed25519PublicKey):
        raise ArtifactIntegrityError(f"{path}: not an Ed25519 public key")
    return key


def _key_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactIntegrityError(f"cannot read the key {path}: {exc.strerror}") from None


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw: bytes = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw


def key_id(public: Any) -> str:
    """The first 16 hex digits of the sha256 of the raw public key: which key signed, in words."""
    return hashlib.sha256(_raw_public(public)).hexdigest()[:16]


def generate_keys(directory: Path) -> tuple[Path, Path]:
    """A new key pair in `directory`: the private key readable by its owner only."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / PRIVATE_KEY, directory / PUBLIC_KEY
    if private.exists() or public.exists():
        raise ArtifactIntegrityError(f"{directory} already holds a key pair: refusing to overwrite it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return private, public


def signature_for(directory: Path, private_key: Path) -> bytes:
    """The SIGNATURE file's content for the version in `directory` as it is now."""
    key = _private_key(private_key)
    signed = (directory / CHECKSUMS_FILE).read_bytes()
    doc = {
        "algorithm": ALGORITHM,
        "signed": CHECKSUMS_FILE,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(signed)).decode(),
    }
    return (json.dumps(doc, indent=1) + "\n").encode()


def verify_signature(directory: Path, public_key: Path) -> str:
    """Raise ArtifactIntegrityError unless SIGNATURE is a valid signature of SHA256SUMS by `public_key`;
    returns the key id."""
    from cryptography.exceptions import InvalidSignature

    key = _public_key(public_key)
    path = directory / SIGNATURE_FILE
    if not path.is_file():
        raise ArtifactIntegrityError(
            f"{directory}: not signed ({SIGNATURE_FILE} is missing) and signing is on"
        )
    try:
        doc = json.loads(path.read_bytes())
        signature = base64.b64decode(doc["signature"], validate=True)
        algorithm = doc["algorithm"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactIntegrityError(f"{path}: not a signature file ({exc})") from None
    if algorithm != ALGORITHM:
        raise ArtifactIntegrityError(f"{path}: algorithm {algorithm!r}, expected {ALGORITHM}")
    try:
        key.verify(signature, (directory / CHECKSUMS_FILE).read_bytes())
    except InvalidSignature:
        raise ArtifactIntegrityError(
            f"{directory}: the signature does not match {CHECKSUMS_FILE} under key {key_id(key)} "
            f"(signed by key {doc.get('key_id', '?')}): the version was changed after it was signed, "
            "or signed with another key"
        ) from None
    return key_id(key)
