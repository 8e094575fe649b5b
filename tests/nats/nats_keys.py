"""NKeys and NATS JWTs made for the auth tests, with the ``nkeys`` package only (no ``nsc``
on these machines): an NKey user for a server's ``authorization`` block, and a whole
operator / account / user chain with the user's ``.creds`` file and the server config of
operator mode (memory resolver, a system account, JetStream for the account).

A NATS JWT is a JWT whose ``alg`` is ``ed25519-nkey``: header and claims in base64url
without padding, signed with the issuer's NKey (the operator signs accounts, an account
signs its users)."""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys

UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}


def new_key(prefix: int) -> nkeys.KeyPair:
    """A fresh key pair of one kind (``nkeys.PREFIX_BYTE_USER``, ``..._ACCOUNT``, ``..._OPERATOR``)."""
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def public(key: nkeys.KeyPair) -> str:
    return str(key.public_key.decode())


def seed(key: nkeys.KeyPair) -> str:
    return str(key.seed.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign_jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, object]) -> str:
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    claims = {
        "jti": _b64(os.urandom(16)).upper(),
        "iat": int(time.time()),
        "iss": public(issuer),
        "name": name,
        "sub": subject,
        "nats": nats,
    }
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing}.{_b64(issuer.sign(signing.encode()))}"


def write_seed(path: Path, key: nkeys.KeyPair) -> Path:
    path.write_text(seed(key) + "\n")
    path.chmod(0o600)
    return path


def nkey_user_config(path: Path, user: nkeys.KeyPair) -> Path:
    """A server config admitting one NKey user (listen address and JetStream come from the command line)."""
    path.write_text(f'authorization {{ users = [ {{ nkey: "{public(user)}" }} ] }}\n')
    return path


@dataclass
class Operator:
    """An operator, its system account and one account with JetStream, as a server config."""

    operator: nkeys.KeyPair
    account: nkeys.KeyPair
    system: nkeys.KeyPair

    @classmethod
    def new(cls) -> Operator:
        return cls(
            new_key(nkeys.PREFIX_BYTE_OPERATOR), new_key(nkeys.PREFIX_BYTE_ACCOUNT), new_key(nkeys.PREFIX_BYTE_ACCOUNT)
        )

    def config(self, path: Path) -> Path:
        operator_jwt = sign_jwt(self.operator, public(self.operator), "op", {"type": "operator", "version": 2})
        jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
        account_jwt = sign_jwt(
            self.operator,
            public(self.account),
            "app",
            {"limits": {**UNLIMITED, "leaf": -1, **jetstream}, "type": "account", "version": 2},
        )
        system_jwt = sign_jwt(
            self.operator,
            public(self.system),
            "SYS",
            {"limits": {**UNLIMITED, "leaf": -1}, "type": "account", "version": 2},
        )
        path.write_text(
            f'operator: "{operator_jwt}"\n'
            f"system_account: {public(self.system)}\n"
            "resolver: MEMORY\n"
            f'resolver_preload: {{ {public(self.account)}: "{account_jwt}", {public(self.system)}: "{system_jwt}" }}\n'
        )
        return path

    def creds(self, path: Path, user: nkeys.KeyPair, signer: nkeys.KeyPair | None = None) -> Path:
        """A ``.creds`` file for ``user`` of the account (or signed by ``signer``), as nsc writes it."""
        user_jwt = sign_jwt(
            signer or self.account,
            public(user),
            "user",
            {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2},
        )
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{user_jwt}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{seed(user)}\n"
            "------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        return path
