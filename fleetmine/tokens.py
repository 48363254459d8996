"""``fleetmine token create|revoke``: API tokens, stored hashed in the lake."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from fleetmine._common import (
    AddressOpt,
    LakeOpt,
    console,
    open_lake,
    token_app,
)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="reader | curator | operator")] = "reader",
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Print a new token for NAME (only its hash is kept; store it now)."""
    from api.auth import create_token

    console.print(create_token(open_lake(lake, address), name, role), soft_wrap=True)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument()], lake: LakeOpt = None, address: AddressOpt = None
) -> None:
    """Revoke NAME's token."""
    from api.auth import revoke_token

    revoke_token(open_lake(lake, address), name)
    console.print(f"revoked {name}")
