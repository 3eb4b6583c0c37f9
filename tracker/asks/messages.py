"""The pre-written message a referrer shares (the share page, the `referral.ask` webhook).

A program's `settings.share.message` is a template with the placeholders `{name}` (the
referrer's display name), `{reward}` (what the referrer earns), `{referee_reward}` (what the
friend gets) and `{link}` (the referrer's link, tagged with the channel it goes out on). A
placeholder with no value (no name known, no referee reward) becomes an empty string; any other
brace text is left as it is written, so a merchant's template can never make rendering fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tracker.formats import money

PLACEHOLDERS = ("name", "reward", "referee_reward", "link")
DEFAULT_MESSAGE = "I use this and think you would like it too. {referee_reward}{link}"
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def reward_text(reward: Mapping[str, Any], beneficiary: str) -> str:
    """What `beneficiary` (referrer or referee) earns on a purchase under the program's reward
    rules, in words ("10.00 USD", "10%"); "" when no rule rewards them. The first rule for a
    purchase wins, else the first rule for them at all."""
    rules = [r for r in reward.get("rules", []) if r.get("beneficiary") == beneficiary]
    if not rules:
        return ""
    rule = next((r for r in rules if r.get("on") == "purchase"), rules[0])
    if rule.get("flat") is not None:
        return money(int(rule["flat"]), str(reward.get("currency", "")))
    if rule.get("percent") is not None:
        return f"{float(rule['percent']):g}%"
    return ""


def render(template: str | None, *, name: str | None, link: str,
           reward: Mapping[str, Any]) -> str:
    """The message with its placeholders filled in (a missing template: DEFAULT_MESSAGE)."""
    referee = reward_text(reward, "referee")
    values = {
        "name": name or "",
        "reward": reward_text(reward, "referrer"),
        # The default message names the friend's reward only when there is one.
        "referee_reward": referee,
        "link": link,
    }
    if template is None:
        values["referee_reward"] = f"You get {referee}: " if referee else ""
        template = DEFAULT_MESSAGE
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template).strip()


def channel_template(settings: Mapping[str, Any], channel: str | None) -> str | None:
    """The message template of a channel: its own (`share.channels` entry `{"name",
    "message"}`), else the program's `share.message`, else None (DEFAULT_MESSAGE)."""
    share = settings.get("share") or {}
    for entry in share.get("channels") or ():
        if isinstance(entry, dict) and entry.get("name") == channel \
                and entry.get("message") is not None:
            return str(entry["message"])
    message = share.get("message")
    return None if message is None else str(message)


def share_message(settings: Mapping[str, Any], *, name: str | None, link: str,
                  channel: str | None = None) -> str:
    """The program's share message for this referrer and link (on `channel`, when that
    channel has a message of its own)."""
    return render(channel_template(settings, channel), name=name, link=link,
                  reward=settings.get("reward") or {})
