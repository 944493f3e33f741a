"""The crawler platform's channels, declared through the hub's public :class:`~tidings.Namespace` API.

* ``job_updates``: every job's events for administrators; other users are confirmed with ``scope: user:<id>``
  and get their own jobs' events there.
* ``job:<id>``: one job's events, for its owner (and administrators).
* ``property_updates``, ``system_alerts``: for every signed-in user; published by the platform.
* ``property:<id>``: one property's price changes, with presence (who is looking at it).
* ``room:<name>``: chat rooms: clients publish, presence announced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tidings.channels import ChannelRules, Namespace, PublishRule, SubscribeRule
from tidings.connection import UserInfo

__all__ = ["platform_namespaces", "platform_rules"]

JobOwnerCheck = Callable[[UserInfo, str], Awaitable[bool]]


async def _nobody(user: UserInfo, arg: str) -> bool:
    return False


def platform_namespaces(owns_job: JobOwnerCheck | None = None) -> dict[str, Namespace]:
    """The namespaces of the platform; ``owns_job(user, job_id)`` decides ``job:<id>`` subscriptions."""
    return {
        "job_updates": Namespace(subscribe=SubscribeRule.ANY, argument=False, own_events_alias=True),
        "job": Namespace(subscribe=owns_job or _nobody),
        "property_updates": Namespace(argument=False),
        "system_alerts": Namespace(argument=False),
        "property": Namespace(presence=True),
        "room": Namespace(publish=PublishRule.CLIENTS, presence=True),
    }


def platform_rules() -> ChannelRules:
    """Rules knowing the platform's channels (for tools that check a channel name without a server)."""
    rules = ChannelRules()
    for name, namespace in platform_namespaces().items():
        rules.declare(name, namespace)
    return rules
