"""FastAPI dependencies."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from node.service import NodeService


def get_service(request: Request) -> NodeService:
    return request.app.state.service


Service = Annotated[NodeService, Depends(get_service)]
