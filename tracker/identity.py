"""Keyed hashes of personal identifiers: comparable across records, useless without the key.

An e-mail address is hashed as the *person* it names, not only the mailbox: plus tags and
Gmail's dots go (the same mailbox), a look-alike of a common provider's domain (a one- or
two-letter typo: `gmial.com`, `hotmial.com`, `yaho.com`, or `.com` one letter off:
`gmail.co`) is that provider, and a distinctive
local part at any of the common consumer providers is one person whatever the provider
(`jo.doe77@yahoo.com` and `jodoe77@gmail.com`): a second account under such an address is
the referrer again, which is what fraud scans compare hashes for.
"""

from __future__ import annotations

import hashlib
import hmac

# Providers that ignore dots in the local part (and an alias domain of theirs).
_DOTLESS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
# Common consumer mail providers: a look-alike of one of these is a typo (or a trap) for it.
PROVIDERS = (
    "gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com", "live.com",
    "msn.com", "icloud.com", "me.com", "aol.com", "protonmail.com", "proton.me", "gmx.com",
    "gmx.de", "gmx.net", "web.de", "mail.com", "yandex.ru", "mail.ru", "yahoo.co.uk",
    "hotmail.co.uk", "yahoo.fr", "hotmail.fr", "orange.fr", "free.fr", "libero.it",
    "qq.com", "163.com", "naver.com", "comcast.net", "verizon.net", "att.net",
    # National providers as common in their countries as the above
    "laposte.net", "sfr.fr", "wanadoo.fr", "posteo.de", "t-online.de", "freenet.de",
    "mailbox.org", "gmx.at", "gmx.ch", "bluewin.ch", "virgilio.it", "tiscali.it", "wp.pl",
    "o2.pl", "interia.pl", "seznam.cz", "btinternet.com", "virginmedia.com", "bigpond.com",
    "rogers.com", "sympatico.ca", "uol.com.br", "bol.com.br", "terra.com.br",
    "rediffmail.com", "ymail.com", "rocketmail.com", "fastmail.com", "tutanota.com",
    # The large providers' national domains, and the big broadband providers' mail
    "outlook.de", "outlook.fr", "outlook.es", "outlook.it", "hotmail.de", "hotmail.it",
    "hotmail.es", "live.co.uk", "live.fr", "yahoo.de", "yahoo.es", "yahoo.it", "yahoo.ca",
    "yahoo.com.au", "sky.com", "talktalk.net", "ntlworld.com", "sbcglobal.net",
    "bellsouth.net", "optusnet.com.au", "shaw.ca", "telefonica.net", "movistar.es",
    "yahoo.com.br", "yahoo.com.mx", "yahoo.com.ar", "yahoo.co.id", "yahoo.co.in",
    "yahoo.co.jp", "yandex.com", "hotmail.com.br", "outlook.com.br", "live.com.mx",
)
# The commonest typo of all: ".com" one letter off (`gmail.co`, `hotmail.cm`, `yahoo.con`).
_COM_TYPOS = ("co", "cm", "om", "con", "cpm", "vom", "xom", "comm", "cmo", "ocm", "coom")
# A local part this long at a consumer provider names one person across providers; one
# letter shorter does where it carries a digit. A bare given name (`james`, `maria`) at two
# providers is two people: only a longer or numbered name is rare enough to be one.
DISTINCTIVE_LOCAL = 6


def canonical_email(email: str) -> str:
    """The mailbox an address reaches: trimmed and lower-cased, without a `+tag` (sub-
    addressing, which the large providers all deliver to the same mailbox), and without dots
    where the provider ignores them (Gmail). So `Jo.Doe+promo@googlemail.com` is
    `jodoe@gmail.com`: a second account under an alias is the same person. A domain one or
    two letters off a common provider's is that provider (`gmial.com` is `gmail.com`)."""
    local, at, domain = email.strip().lower().rpartition("@")
    if not at or not local:
        return email.strip().lower()
    local = local.split("+", 1)[0] or local
    domain = provider_of(domain) or domain
    if domain in _DOTLESS:
        domain = _DOTLESS[domain]
        local = local.replace(".", "") or local
    return f"{local}@{domain}"


def person_email(email: str) -> str:
    """The person an address names: its canonical mailbox, and for a distinctive local part
    (DISTINCTIVE_LOCAL) at a common consumer provider, that local part (without dots) at any
    of them."""
    mailbox = canonical_email(email)
    local, at, domain = mailbox.rpartition("@")
    if not at or domain not in PROVIDERS:
        return mailbox
    bare = local.replace(".", "")
    numbered = any(ch.isdigit() for ch in bare)
    if len(bare) < DISTINCTIVE_LOCAL - numbered:
        return mailbox
    return f"{bare}@consumer-mail"


def provider_of(domain: str) -> str | None:
    """The common provider a domain is, or is a look-alike of (edit distance at most 2, with
    transpositions, over the whole domain, and the same top-level domain or `.com` one letter
    off: `gmail.co`, `gamil.cm`); None otherwise."""
    domain = domain.strip().lower()
    if domain in PROVIDERS:
        return domain
    if len(domain) < 7:
        return None
    name, _dot, tld = domain.rpartition(".")
    if tld in _COM_TYPOS and f"{name}.com" in PROVIDERS:
        return f"{name}.com"
    # Both at once is still a typo of two letters: `gamil.cm`, `yaho.co` (the provider's
    # ".com" is what a typo'd ".com" is compared with).
    tld = "com" if tld in _COM_TYPOS else tld
    best: tuple[int, str] | None = None
    for provider in PROVIDERS:
        if provider.rsplit(".", 1)[-1] != tld:
            continue
        if abs(len(provider) - len(domain)) > 2:
            continue
        d = _distance(domain, provider)
        limit = 1 if len(provider) <= 8 else 2
        if d <= limit and (best is None or d < best[0]):
            best = (d, provider)
    return None if best is None else best[1]


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein with adjacent transpositions)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def email_hash(secret: bytes, email: str) -> bytes:
    """HMAC-SHA256 of the person an address names (`person_email`)."""
    return hmac.new(secret, person_email(email).encode(), hashlib.sha256).digest()
