"""Channel names and who may do what on them (see the table in ``docs/protocol.md``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tidings.connection import UserInfo
from tidings.protocol import CHANNEL_RE

__all__ = ["ChannelPolicy", "ChannelRules", "OwnerCheck"]

OwnerCheck = Callable[[UserInfo, str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    """Rules for one channel or namespace (``name`` or ``name:<arg>``)."""

    subscribe: str = "any"  # any | admin | self | auto | owner
    client_publish: bool = False
    presence_events: bool = False
    own_events_alias: bool = False  # non-admins: confirmed, their own events arrive on user:<id>


DEFAULT_POLICIES: dict[str, ChannelPolicy] = {
    "broadcast": ChannelPolicy(subscribe="auto"),
    "admins": ChannelPolicy(subscribe="admin"),
    "user": ChannelPolicy(subscribe="self"),
    "job_updates": ChannelPolicy(subscribe="any", own_events_alias=True),
    "job": ChannelPolicy(subscribe="owner"),
    "property_updates": ChannelPolicy(),
    "system_alerts": ChannelPolicy(),
    "property": ChannelPolicy(presence_events=True),
    "room": ChannelPolicy(client_publish=True, presence_events=True),
}
NAMESPACED = frozenset({"user", "job", "property", "room"})


class ChannelRules:
    """Answers "may this user subscribe / publish here?" and "does this channel send join/leave?"."""

    def __init__(self, policies: dict[str, ChannelPolicy] | None = None) -> None:
        self.policies = dict(DEFAULT_POLICIES if policies is None else policies)
        self._owner_checks: dict[str, OwnerCheck] = {}

    def register(self, namespace: str, policy: ChannelPolicy, owner_check: OwnerCheck | None = None) -> None:
        """Add or replace a channel (``namespace``) or namespace (``namespace:<arg>``) and its owner check."""
        self.policies[namespace] = policy
        if owner_check is not None:
            self._owner_checks[namespace] = owner_check

    def policy(self, channel: str) -> ChannelPolicy | None:
        """The policy of ``channel``, or None if the name is invalid or unknown."""
        if not CHANNEL_RE.match(channel):
            return None
        namespace, sep, arg = channel.partition(":")
        if sep:
            if not arg or namespace not in self.policies or namespace not in self._namespaced():
                return None
        elif namespace in self._namespaced():
            return None
        return self.policies.get(namespace)

    def _namespaced(self) -> frozenset[str]:
        return NAMESPACED | frozenset(self._owner_checks)

    async def may_subscribe(self, user: UserInfo, channel: str) -> bool:
        """Whether ``user`` may subscribe to ``channel`` (assumed to have a policy)."""
        policy = self.policy(channel)
        if policy is None:
            return False
        rule = policy.subscribe
        if rule in ("any", "auto"):
            return True
        if user.is_admin:
            return True
        if rule == "self":
            return channel == f"user:{user.id}"
        if rule == "owner":
            check = self._owner_checks.get(channel.partition(":")[0])
            return check is not None and await check(user, channel.partition(":")[2])
        return False

    def may_client_publish(self, user: UserInfo, channel: str) -> bool:
        """Whether a client may publish to ``channel`` over its WebSocket."""
        policy = self.policy(channel)
        return policy is not None and policy.client_publish

    def presence_events(self, channel: str) -> bool:
        """Whether joins and leaves on ``channel`` are announced."""
        policy = self.policy(channel)
        return policy is not None and policy.presence_events
