"""The world bench/redteam4's people live in: an address plan (home broadband, carrier NAT
pools, offices, campuses, VPN exits, data centres) written as MaxMind-format geo databases,
browsers as their headers show them, and people with their mailboxes, homes and devices.

Written blind (issue 13 and DESIGN.md only): nothing here knows how refguard decides.
"""

from __future__ import annotations

import ipaddress
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbU32

from bench.geodb import FILES, PLACES, city_records, write_db

DAY = 86_400.0
# Home markets a program is drawn in, and the languages their browsers ask for.
LANGS: dict[str, tuple[str, ...]] = {
    "US": ("en-US,en;q=0.9", "en-US,en;q=0.9,es;q=0.8", "en-US"),
    "GB": ("en-GB,en;q=0.9", "en-GB,en-US;q=0.9,en;q=0.8"),
    "DE": ("de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7", "de-DE,de;q=0.9", "de,en-US;q=0.7,en;q=0.3"),
    "FR": ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "fr-FR,fr;q=0.9"),
    "NL": ("nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7", "nl,en;q=0.8"),
    "ES": ("es-ES,es;q=0.9,en;q=0.8", "es-ES,es;q=0.9"),
    "PL": ("pl-PL,pl;q=0.9,en-US;q=0.8,en;q=0.7", "pl,en-US;q=0.7,en;q=0.3"),
    "CA": ("en-CA,en;q=0.9", "fr-CA,fr;q=0.9,en-CA;q=0.8,en;q=0.7", "en-CA,en-US;q=0.9,en;q=0.8"),
    "BR": ("pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7", "pt-BR,pt;q=0.9"),
    "JP": ("ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7", "ja,en-US;q=0.9,en;q=0.8"),
    "SG": ("en-SG,en;q=0.9,zh-CN;q=0.8", "en-GB,en;q=0.9"),
    "IN": ("en-IN,en;q=0.9,hi;q=0.8", "hi-IN,hi;q=0.9,en;q=0.8", "en-GB,en-US;q=0.9,en;q=0.8"),
    "AU": ("en-AU,en;q=0.9", "en-AU,en-GB;q=0.9,en;q=0.8"),
    "ZA": ("en-ZA,en;q=0.9", "en-ZA,af;q=0.9,en;q=0.8"),
}
HOMES = ("US", "GB", "DE", "FR", "NL", "ES", "PL", "CA", "BR", "IN", "AU")
PROVIDERS: dict[str, tuple[str, ...]] = {
    "": ("gmail.com", "gmail.com", "gmail.com", "outlook.com", "hotmail.com", "yahoo.com",
         "icloud.com", "proton.me"),
    "US": ("aol.com", "comcast.net", "att.net"), "GB": ("yahoo.co.uk", "btinternet.com"),
    "DE": ("gmx.de", "web.de", "t-online.de"), "FR": ("orange.fr", "free.fr", "laposte.net"),
    "NL": ("ziggo.nl", "kpnmail.nl"), "ES": ("telefonica.net", "yahoo.es"),
    "PL": ("wp.pl", "onet.pl", "o2.pl"), "CA": ("shaw.ca", "rogers.com"),
    "BR": ("uol.com.br", "bol.com.br"), "IN": ("rediffmail.com", "yahoo.co.in"),
    "AU": ("bigpond.com", "optusnet.com.au"), "JP": ("yahoo.co.jp",), "SG": ("singnet.com.sg",),
    "ZA": ("mweb.co.za",),
}
FIRST = ("james", "mary", "li", "wei", "anna", "lukas", "marie", "sofia", "arjun", "priya",
         "joao", "ana", "piotr", "kasia", "emma", "noah", "olivia", "liam", "mia", "lucas",
         "chloe", "hugo", "ines", "jan", "eva", "yuki", "hana", "sam", "alex", "nina", "omar",
         "fatima", "diego", "lucia", "tom", "kate", "ravi", "sunita", "max", "lena", "pablo",
         "carmen", "daniel", "sara", "ben", "zoe", "felix", "ida", "mateo", "leah")
LAST = ("smith", "jones", "brown", "muller", "schmidt", "martin", "bernard", "silva", "santos",
        "kowalski", "nowak", "garcia", "lopez", "sharma", "patel", "tanaka", "sato", "wilson",
        "taylor", "moore", "dubois", "jansen", "devries", "rossi", "fischer", "weber", "nguyen",
        "kim", "park", "chen", "wang", "singh", "kumar", "oliveira", "costa", "fernandez",
        "walker", "hall", "young", "king", "wright", "scott", "green", "baker", "adams")
# A look-alike provider domain a fraudster registers a mailbox at, by common provider.
TYPOS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # provider: (one-letter typos, two-letter typos)
    "gmail.com": (("gmial.com", "gmal.com", "gmaill.com", "gnail.com"),
                  ("gmali.co", "gmial.co", "gamil.cm")),
    "outlook.com": (("outlok.com", "outllook.com", "oulook.com"), ("outlok.co", "otlook.cm")),
    "hotmail.com": (("hotmial.com", "hotmal.com", "hotmail.co"), ("hotmial.co", "homtail.cm")),
    "yahoo.com": (("yaho.com", "yahooo.com", "yhoo.com"), ("yaho.co", "yhaoo.cm")),
    "icloud.com": (("iclod.com", "icloud.co", "icoud.com"), ("iclud.co", "icluod.cm")),
}


def diurnal(rng: random.Random, day: float, night_owl: float = 0.0) -> float:
    """A time on `day` (offset in days from the start) when people browse: evenings most,
    nights least."""
    weights = (1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.2, 3, 3.2, 3.3, 3.5, 4, 3.8, 3.5, 3.4, 3.6,
               4.2, 5, 5.6, 5.8, 5.2, 3.8, 2.2)
    w = [x + night_owl for x in weights]
    hour = rng.choices(range(24), weights=w)[0]
    return day * DAY + hour * 3600 + rng.random() * 3600


# -- addresses -------------------------------------------------------------------------------


@dataclass
class Block:
    """One network of the plan: where it is, whose it is, what kind of access it is."""

    net: ipaddress.IPv4Network
    country: str
    place: int  # index into bench.geodb.PLACES
    asn: int
    org: str
    kind: str  # residential, mobile, business, campus, vpn, hosting
    anon: dict[str, bool] = field(default_factory=dict)

    def host(self, rng: random.Random) -> str:
        return str(self.net[rng.randrange(2, self.net.num_addresses - 2)])


ISP_NAMES = ("Broadband", "Telecom", "Cable", "Fibre", "Net", "Online")
CARRIERS = ("Mobile", "Wireless", "Cellular", "LTE")
V4_FIRST = tuple(a for a in range(11, 223) if a not in {100, 127, 169, 172, 192, 198, 203})


class AddressPlan:
    """Networks drawn for one seed; every address handed out falls in a block here, and the
    geo databases say of each block where it is and what it is."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.blocks: list[Block] = []
        self._used: set[tuple[int, int]] = set()
        self._asn = 20_000 + rng.randrange(10_000)
        self.places = {iso: [i for i, p in enumerate(PLACES) if p[1] == iso] for iso in LANGS}
        for iso in LANGS:  # countries not in the geo table fall back to the first place
            if not self.places[iso]:
                self.places[iso] = [0]
        self.residential: dict[str, list[Block]] = {}
        self.mobile: dict[str, list[Block]] = {}
        self.business: dict[str, Block] = {}
        self.campus: dict[str, Block] = {}
        self.vpn: list[Block] = []
        self.hosting: list[Block] = []

    def _net16(self) -> tuple[int, int]:
        while True:
            ab = (self.rng.choice(V4_FIRST), self.rng.randrange(256))
            if ab not in self._used:
                self._used.add(ab)
                return ab

    def add(self, country: str, kind: str, org: str, prefix: int = 16,
            anon: dict[str, bool] | None = None) -> Block:
        a, b = self._net16()
        low = 0 if prefix == 16 else self.rng.randrange(256) << 8
        net = ipaddress.IPv4Network(((a << 24) | (b << 16) | low, prefix))
        self._asn += 1 + self.rng.randrange(50)
        block = Block(net, country, self.rng.choice(self.places[country]), self._asn, org, kind,
                      anon or {})
        self.blocks.append(block)
        return block

    def country(self, iso: str) -> None:
        if iso in self.residential:
            return
        r = self.rng
        self.residential[iso] = [self.add(iso, "residential", f"{iso} {r.choice(ISP_NAMES)} {i}")
                                 for i in range(r.randint(2, 4))]
        self.mobile[iso] = [self.add(iso, "mobile", f"{iso} {r.choice(CARRIERS)} {i}")
                            for i in range(r.randint(2, 3))]
        self.business[iso] = self.add(iso, "business", f"{iso} Business Networks")
        self.campus[iso] = self.add(iso, "campus", f"{iso} National Research and Education "
                                    "Network")

    def clouds(self) -> None:
        for name, iso in (("NordLayer", "NL"), ("ExpressVPN", "GB"), ("Mullvad", "DE"),
                          ("Proton AG", "US"), ("Surfshark", "SG")):
            self.country(iso)
            self.vpn.append(self.add(iso, "vpn", name, 24,
                                     {"is_anonymous": True, "is_anonymous_vpn": True}))
        for name, iso in (("AMAZON-02", "US"), ("DIGITALOCEAN-ASN", "US"), ("OVH SAS", "FR"),
                          ("Hetzner Online GmbH", "DE"), ("Choopa LLC", "NL")):
            self.country(iso)
            self.hosting.append(self.add(iso, "hosting", name, 16,
                                         {"is_anonymous": True, "is_hosting_provider": True}))

    def write_geo(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        places = city_records()
        city = {str(b.net): places[b.place] for b in self.blocks}
        asn = {str(b.net): {"autonomous_system_number": MmdbU32(b.asn),
                            "autonomous_system_organization": b.org} for b in self.blocks}
        anon = {str(b.net): b.anon for b in self.blocks if b.anon}
        for key, records in (("city", city), ("asn", asn), ("anonymous", anon)):
            name, database_type = FILES[key]
            write_db(folder / name, database_type, records)


# -- browsers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    ua: str
    lang: str
    mobile: bool
    model: str  # what the owner would call it ("iPhone 15", "Galaxy S23", "Windows laptop")


def _chrome(rng: random.Random) -> str:
    return f"{rng.randint(120, 131)}.0.0.0"


def browser(rng: random.Random, lang: str, mobile: bool | None = None,
            model: str | None = None) -> Device:
    """A browser as its headers show it. Modern Chrome reduces its UA (every Android phone says
    `Android 10; K`), and every iPhone of one iOS version looks alike: headers name few
    distinct devices."""
    if mobile is None:
        mobile = rng.random() < 0.6
    pick = model or (rng.choice(("iPhone", "iPhone", "Galaxy", "Pixel", "Redmi", "Galaxy"))
                     if mobile else rng.choice(("Windows", "Windows", "Windows", "Mac", "Mac",
                                                "Linux")))
    if pick == "iPhone":
        v = rng.choice(("16_6", "17_4", "17_5", "17_6", "18_0", "18_1", "18_2"))
        ua = (f"Mozilla/5.0 (iPhone; CPU iPhone OS {v} like Mac OS X) AppleWebKit/605.1.15 "
              f"(KHTML, like Gecko) Version/{v.split('_')[0]}.{v.split('_')[1]} Mobile/15E148 "
              "Safari/604.1")
        if rng.random() < 0.15:
            ua = ua.replace("Version/", "CriOS/" + _chrome(rng) + " Version/")
    elif pick in ("Galaxy", "Pixel", "Redmi"):
        if pick == "Galaxy" and rng.random() < 0.35:
            m = rng.choice(("SM-S918B", "SM-A546B", "SM-S911B", "SM-A155F"))
            ua = (f"Mozilla/5.0 (Linux; Android 14; {m}) AppleWebKit/537.36 (KHTML, like Gecko) "
                  f"SamsungBrowser/{rng.randint(23, 26)}.0 Chrome/{_chrome(rng)} Mobile "
                  "Safari/537.36")
        else:
            ua = (f"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                  f"Chrome/{_chrome(rng)} Mobile Safari/537.36")
    elif pick == "Mac":
        if rng.random() < 0.5:
            ua = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                  f"(KHTML, like Gecko) Version/{rng.choice(('17.5', '17.6', '18.1'))} "
                  "Safari/605.1.15")
        else:
            ua = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
                  f"(KHTML, like Gecko) Chrome/{_chrome(rng)} Safari/537.36")
    elif pick == "Linux":
        ua = (f"Mozilla/5.0 (X11; Linux x86_64; rv:{rng.randint(115, 133)}.0) Gecko/20100101 "
              f"Firefox/{rng.randint(115, 133)}.0")
    else:
        c = _chrome(rng)
        ua = rng.choice((
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{c} Safari/537.36",
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{c} Safari/537.36 Edg/{c}",
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{rng.randint(115, 133)}.0) "
            f"Gecko/20100101 Firefox/{rng.randint(115, 133)}.0"))
    return Device(ua, lang, mobile, pick)


# Privacy browsers that make every user look the same (Tor Browser's and Mullvad Browser's
# fixed UA and language; Brave's reduced Chrome UA).
PRIVACY = (
    Device("Mozilla/5.0 (Windows NT 10.0; rv:128.0) Gecko/20100101 Firefox/128.0",
           "en-US,en;q=0.5", False, "Tor Browser"),
    Device("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/130.0.0.0 Safari/537.36", "en-US,en;q=0.9", False, "Brave"),
    Device("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/130.0.0.0 Mobile Safari/537.36", "en-US,en;q=0.9", True, "Brave"),
)
BOT_UAS = ("python-requests/2.32.3", "Go-http-client/1.1", "curl/8.5.0",
           "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "HeadlessChrome/126.0.0.0 Safari/537.36",
           "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)")


# -- people ----------------------------------------------------------------------------------


@dataclass
class Person:
    """Someone with a merchant account or who might get one."""

    cid: str
    first: str
    last: str
    email: str
    country: str
    home_ip: str
    devices: list[Device]
    carrier: int  # index into plan.mobile[country]
    nat: bool  # their carrier puts them behind carrier-grade NAT
    office_ip: str | None = None
    campus_ips: tuple[str, ...] = ()
    vpn: Block | None = None  # browses through this VPN most of the time
    privacy: bool = False  # privacy browser: shared fingerprint, cookies cleared per session
    tags: set[str] = field(default_factory=set)
    vids: dict[int, str] = field(default_factory=dict)  # device index -> visitor cookie


def new_vid(rng: random.Random) -> str:
    return "v" + uuid.UUID(int=rng.getrandbits(128), version=4).hex[:22]


def mailbox(rng: random.Random, first: str, last: str, country: str) -> str:
    style = rng.randrange(6)
    local = (f"{first}.{last}", f"{first}{last}", f"{first[0]}{last}",
             f"{first}{rng.randint(1, 99)}", f"{first}.{last}{rng.randint(70, 99)}",
             f"{last}.{first}")[style]
    provider = rng.choice(PROVIDERS[""] + PROVIDERS.get(country, ()))
    return f"{local}@{provider}"


@dataclass
class Visit:
    """Where a person is when they do something: address, browser, cookie, and the
    look-alike traits of that moment."""

    ip: str
    device: Device
    vid: str
    tags: frozenset[str]


def as_record(x: Any) -> Any:  # for Params.as_dict
    return round(x, 4) if isinstance(x, float) else x
