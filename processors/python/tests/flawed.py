"""Flawed variants of the reference processor, for testing `dsr conformance`
only: each breaks one rule of the contract, and the kit must fail it with a
message that names the fix. Never deploy these.

    python tests/flawed.py FLAW [processor.py's options]

FLAW: no-token-check | any-audience | replay | bad-signature
"""

import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

import processor  # noqa: E402


class NoTokenCheck(processor.Processor):
    """Answers whoever calls."""

    def authorise(self, context, scope):
        return None


class AnyAudience(processor.Processor):
    """Verifies the signature and the expiry, but not the audience."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens.verify = lambda token, key, issuer: jwt.decode(
            token, key, algorithms=["EdDSA"], issuer=issuer, options={"verify_aud": False}
        )


class Replay(processor.Processor):
    """Acts on every call, whatever its idempotency key has done before."""

    def claim(self, h, request, kind, background):
        fresh = processor.Checked(h.request_id, h.controller, f"{h.key}-{uuid.uuid4().hex[:8]}")
        return super().claim(fresh, request, kind, background=False)


class BadSignature(processor.Processor):
    """Publishes one key and signs receipts with another."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.signer.key = Ed25519PrivateKey.generate()


FLAWS = {
    "no-token-check": NoTokenCheck,
    "any-audience": AnyAudience,
    "replay": Replay,
    "bad-signature": BadSignature,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in FLAWS:
        sys.exit(f"usage: flawed.py {{{'|'.join(FLAWS)}}} [processor options]")
    processor.main(sys.argv[2:], processor=FLAWS[sys.argv[1]])
