"""Audit logs written outside the voice path (session creation, operator actions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.text import stripped
from db.tables import AuditLog


async def log_action(
    db: AsyncSession,
    action: str,
    *,
    session_id: int | None = None,
    user_id: int | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    status: str = "success",
    details: dict[str, Any] | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> AuditLog:
    row = AuditLog(
        action=action,
        session_id=session_id,
        user_id=user_id,
        resource_type=resource_type,
        resource_id=resource_id,
        status=status,
        details=details or {},
        ip_address=stripped(ip_address, 64),
        user_agent=stripped(user_agent, 512),
    )
    db.add(row)
    await db.flush()
    return row


async def logs_for_session(db: AsyncSession, session_id: int) -> Sequence[AuditLog]:
    stmt = select(AuditLog).where(AuditLog.session_id == session_id).order_by(AuditLog.id)
    return (await db.execute(stmt)).scalars().all()
