"""The world a program lives in: networks (ISPs, carriers with NAT pools, offices, campuses,
hosting, VPN and Tor exits) with their geo records, devices (real user-agent strings and the
Accept-Language each browser sends), people's names and mailboxes.

Everything is drawn from a `random.Random` handed in, so a seed gives the same world.
"""

from __future__ import annotations

import ipaddress
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Countries the geo databases know (bench/geodb.PLACES), with a UTC offset (hours) and a locale.
COUNTRIES: dict[str, tuple[float, str]] = {
    "US": (-5, "en-US"), "GB": (0, "en-GB"), "DE": (1, "de-DE"), "FR": (1, "fr-FR"),
    "NL": (1, "nl-NL"), "ES": (1, "es-ES"), "PL": (1, "pl-PL"), "CA": (-5, "en-CA"),
    "BR": (-3, "pt-BR"), "JP": (9, "ja-JP"), "SG": (8, "en-SG"), "IN": (5.5, "en-IN"),
    "AU": (10, "en-AU"), "ZA": (2, "en-ZA"),
}
HOME_COUNTRIES = ("US", "US", "US", "GB", "GB", "DE", "FR", "CA", "AU", "NL", "ES")

RESIDENTIAL_ORGS = {
    "US": ("Comcast Cable Communications, LLC", "Charter Communications Inc", "AT&T Services"),
    "GB": ("British Telecommunications PLC", "Virgin Media Limited", "Sky UK Limited"),
    "DE": ("Deutsche Telekom AG", "Vodafone GmbH", "Telefonica Germany"),
    "FR": ("Orange", "Free SAS", "SFR SA"),
    "NL": ("KPN B.V.", "Ziggo B.V."), "ES": ("Telefonica de Espana SAU", "Vodafone Spain"),
    "PL": ("Orange Polska Spolka Akcyjna", "UPC Polska"),
    "CA": ("Rogers Communications Canada Inc.", "Bell Canada"),
    "BR": ("Claro NXT Telecomunicacoes Ltda", "Vivo"), "JP": ("NTT Communications Corporation",),
    "SG": ("Singtel",), "IN": ("Reliance Jio Infocomm Limited", "Bharti Airtel"),
    "AU": ("Telstra Limited", "TPG Telecom"), "ZA": ("Vodacom", "MTN SA"),
}
MOBILE_ORGS = {
    "US": ("T-Mobile USA, Inc.", "Verizon Wireless"), "GB": ("EE Limited", "Vodafone UK"),
    "DE": ("Telefonica Germany Mobile", "Vodafone GmbH Mobile"), "FR": ("Bouygues Telecom",),
    "NL": ("Odido Netherlands",), "ES": ("Orange Espagne",), "PL": ("Play Mobile",),
    "CA": ("Telus Mobility",), "BR": ("TIM Brasil",), "JP": ("KDDI Corporation",),
    "SG": ("StarHub Mobile",), "IN": ("Vodafone Idea Ltd",), "AU": ("Optus Mobile",),
    "ZA": ("Cell C",),
}
HOSTING_ORGS = (("AMAZON-02", "US"), ("DIGITALOCEAN-ASN", "US"), ("Hetzner Online GmbH", "DE"),
                ("OVH SAS", "FR"), ("GOOGLE-CLOUD-PLATFORM", "NL"), ("Linode, LLC", "SG"))
VPN_ORGS = (("M247 Europe SRL", "NL"), ("Datacamp Limited", "GB"), ("Clouvider Limited", "US"),
            ("Packethub S.A.", "DE"))
TOR_ORGS = (("Foundation for Applied Privacy", "DE"), ("Emerald Onion", "US"))

# First octets kept out of the plan: reserved, private, CGNAT, loopback, link-local, multicast.
V4_SKIP = {0, 10, 100, 127, 169, 172, 192, 198, 203}


@dataclass
class Network:
    """One autonomous system's address space in this world."""

    kind: str  # residential | mobile | business | university | hosting | vpn | tor
    country: str
    asn: int
    org: str
    blocks: list[int]  # /16 prefixes as (a << 8 | b)
    pool: list[str] = field(default_factory=list)  # NAT / exit addresses, when it has some

    def host(self, rng: random.Random, block: int | None = None) -> str:
        b = self.blocks[rng.randrange(len(self.blocks))] if block is None else block
        return f"{b >> 8}.{b & 0xFF}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"


class World:
    """Address plan and geo records for one seed."""

    def __init__(self, rng: random.Random, home: str, *, nat_pool: int, vpn_exits: int,
                 tor_exits: int) -> None:
        self.rng = rng
        self.home = home
        free = [(a << 8) | b for a in range(2, 224) if a not in V4_SKIP for b in range(256)]
        rng.shuffle(free)
        self._free = free
        self.networks: list[Network] = []
        self.by_kind: dict[str, list[Network]] = {}
        asn = 7000 + rng.randrange(1000)
        for country in COUNTRIES:
            big = country == home
            for org in RESIDENTIAL_ORGS[country]:
                asn += rng.randint(3, 900)
                self._add(Network("residential", country, asn, org,
                                  self._blocks(rng.randint(3, 6) if big else 2)))
            for org in MOBILE_ORGS[country]:
                asn += rng.randint(3, 900)
                net = Network("mobile", country, asn, org, self._blocks(4 if big else 2))
                # A carrier-grade NAT pool: a few hundred users per address, in a few /24s.
                first = net.blocks[0]
                subnets = [rng.randrange(256) for _ in range(rng.randint(1, 4))]
                net.pool = sorted({f"{first >> 8}.{first & 0xFF}.{rng.choice(subnets)}."
                                   f"{rng.randint(2, 254)}" for _ in range(nat_pool)})
                self._add(net)
            asn += rng.randint(3, 900)
            self._add(Network("business", country, asn, f"{country} Business Fibre",
                              self._blocks(2)))
        for org, country in HOSTING_ORGS:
            asn += rng.randint(3, 900)
            self._add(Network("hosting", country, asn, org, self._blocks(3)))
        for org, country in VPN_ORGS:
            asn += rng.randint(3, 900)
            net = Network("vpn", country, asn, org, self._blocks(1))
            b = net.blocks[0]
            subnets = [rng.randrange(256) for _ in range(3)]
            net.pool = sorted({f"{b >> 8}.{b & 0xFF}.{rng.choice(subnets)}.{rng.randint(2, 254)}"
                               for _ in range(vpn_exits)})
            self._add(net)
        for org, country in TOR_ORGS:
            asn += rng.randint(3, 900)
            net = Network("tor", country, asn, org, self._blocks(1))
            b = net.blocks[0]
            net.pool = sorted({f"{b >> 8}.{b & 0xFF}.{rng.randrange(256)}.{rng.randint(2, 254)}"
                               for _ in range(tor_exits)})
            self._add(net)
        self.universities: list[Network] = []
        self._used: set[str] = set()

    def _blocks(self, n: int) -> list[int]:
        return [self._free.pop() for _ in range(n)]

    def _add(self, net: Network) -> None:
        self.networks.append(net)
        self.by_kind.setdefault(net.kind, []).append(net)

    def nets(self, kind: str, country: str | None = None) -> list[Network]:
        found = [n for n in self.by_kind.get(kind, []) if country is None or n.country == country]
        return found or self.by_kind[kind]

    # -- addresses ----------------------------------------------------------------------------

    def unique_host(self, net: Network) -> str:
        while True:
            ip = net.host(self.rng)
            if ip not in self._used:
                self._used.add(ip)
                return ip

    def residential_ip(self, country: str) -> str:
        """A household's (or a residential proxy's) address: a fresh one."""
        return self.unique_host(self.rng.choice(self.nets("residential", country)))

    def business_ip(self, country: str) -> str:
        return self.unique_host(self.rng.choice(self.nets("business", country)))

    def carrier(self, country: str) -> Network:
        return self.rng.choice(self.nets("mobile", country))

    def mobile_ip(self, carrier: Network, nat: bool) -> str:
        if nat and carrier.pool:
            return self.rng.choice(carrier.pool)
        return carrier.host(self.rng, carrier.blocks[1 + self.rng.randrange(len(carrier.blocks)
                                                                            - 1)])

    def hosting_ip(self) -> str:
        return self.unique_host(self.rng.choice(self.by_kind["hosting"]))

    def vpn_provider(self) -> Network:
        return self.rng.choice(self.by_kind["vpn"])

    def tor_exit(self) -> str:
        return self.rng.choice(self.rng.choice(self.by_kind["tor"]).pool)

    def university(self, country: str, nat_ips: int) -> list[str]:
        """A campus behind `nat_ips` addresses of its own AS."""
        net = Network("university", country, 60000 + len(self.universities) * 17,
                      f"University {len(self.universities) + 1} of {country}", self._blocks(1))
        b = net.blocks[0]
        sub = self.rng.randrange(256)
        net.pool = [f"{b >> 8}.{b & 0xFF}.{sub}.{10 + i * 7}" for i in range(nat_ips)]
        self._add(net)
        self.universities.append(net)
        return list(net.pool)

    def network_of(self, ip: str) -> Network | None:
        a, b = (int(x) for x in ip.split(".")[:2])
        key = (a << 8) | b
        for net in self.networks:
            if key in net.blocks:
                return net
        return None

    # -- geo databases ------------------------------------------------------------------------

    def write_geo(self, folder: Path) -> None:
        """City, ASN and Anonymous-IP databases in MaxMind's layout (bench/geodb's writer)."""
        from mmdb_writer import MmdbU32

        from bench.geodb import FILES, PLACES, city_records, write_db

        folder.mkdir(parents=True, exist_ok=True)
        places = city_records()
        by_country: dict[str, list[dict[str, Any]]] = {}
        for place, rec in zip(PLACES, places, strict=True):
            by_country.setdefault(place[1], []).append(rec)
        city: dict[str, Any] = {}
        asn: dict[str, Any] = {}
        anon: dict[str, Any] = {}
        for net in self.networks:
            for block in net.blocks:
                cidr = str(ipaddress.IPv4Network(((block >> 8) << 24 | (block & 0xFF) << 16, 16)))
                city[cidr] = by_country[net.country][block % len(by_country[net.country])]
                asn[cidr] = {"autonomous_system_number": MmdbU32(net.asn),
                             "autonomous_system_organization": net.org}
                if net.kind == "hosting":
                    anon[cidr] = {"is_hosting_provider": True}
                elif net.kind == "vpn":
                    anon[cidr] = {"is_anonymous": True, "is_anonymous_vpn": True,
                                  "is_hosting_provider": True}
                elif net.kind == "tor":
                    anon[cidr] = {"is_anonymous": True, "is_tor_exit_node": True}
        for key, records in (("city", city), ("asn", asn), ("anonymous", anon)):
            name, database_type = FILES[key]
            write_db(folder / name, database_type, records)


# -- devices ----------------------------------------------------------------------------------

CHROME = (150, 156)  # current Chrome majors of the period; a tail of older ones
FIREFOX = (146, 152)
FIREFOX_ESR = 140
IOS = (("18_6", "18.6"), ("18_6", "26.0"), ("18_6", "26.1"), ("18_6", "26.2"),
       ("18_5", "18.5"), ("17_6_1", "17.6"), ("18_7", "18.7"))
IOS_W = (6, 10, 14, 16, 4, 3, 5)
SAMSUNG_MODELS = ("SM-S921B", "SM-S928B", "SM-A546B", "SM-A556B", "SM-A155F", "SM-S911B",
                  "SM-G991B", "SM-A346B")
RARE_MODELS = ("SM-J530F", "Redmi Note 8 Pro", "moto g(7) power", "CPH2127", "ASUS_X00TD",
               "vivo 1906", "Infinix X657C", "TECNO KG5j", "Nokia 3.1 Plus", "LM-X420",
               "SM-A105FN", "ZTE Blade A51", "HUAWEI Y6 2019", "Lenovo K8 Note")


@dataclass
class Device:
    ua: str
    family: str  # ios_safari, android_chrome, ... (what the Accept-Language format follows)
    kind: str  # phone | desktop | tablet
    vid: str
    clears: bool = False  # drops cookies between sessions (privacy browsers, farms)


def chrome_major(rng: random.Random) -> int:
    if rng.random() < 0.85:
        return rng.randint(CHROME[1] - 2, CHROME[1])
    return rng.randint(CHROME[0] - 12, CHROME[1] - 3)


def user_agent(rng: random.Random, family: str) -> str:
    """A real-looking user agent of a browser family, versions drawn as the market spreads."""
    cv = chrome_major(rng)
    build = f"{cv}.0.{7000 + cv * 3 + rng.randint(0, 40)}.{rng.randint(40, 180)}"
    if family == "ios_safari":
        os_v, sv = rng.choices(IOS, IOS_W)[0]
        return (f"Mozilla/5.0 (iPhone; CPU iPhone OS {os_v} like Mac OS X) AppleWebKit/605.1.15 "
                f"(KHTML, like Gecko) Version/{sv} Mobile/15E148 Safari/604.1")
    if family == "ios_chrome":
        os_v, _ = rng.choices(IOS, IOS_W)[0]
        return (f"Mozilla/5.0 (iPhone; CPU iPhone OS {os_v} like Mac OS X) AppleWebKit/605.1.15 "
                f"(KHTML, like Gecko) CriOS/{build} Mobile/15E148 Safari/604.1")
    if family == "ipad_safari":
        os_v, sv = rng.choices(IOS, IOS_W)[0]
        return (f"Mozilla/5.0 (iPad; CPU OS {os_v} like Mac OS X) AppleWebKit/605.1.15 "
                f"(KHTML, like Gecko) Version/{sv} Mobile/15E148 Safari/604.1")
    if family == "android_chrome":
        return (f"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{cv}.0.0.0 Mobile Safari/537.36")
    if family == "samsung":
        model = rng.choice(SAMSUNG_MODELS)
        return (f"Mozilla/5.0 (Linux; Android {rng.choice((14, 15, 16))}; {model}) "
                f"AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/{rng.randint(27, 30)}.0 "
                f"Chrome/{cv - 10}.0.0.0 Mobile Safari/537.36")
    if family == "android_webview":  # rare: an old or odd phone's in-app browser
        model = rng.choice(RARE_MODELS)
        return (f"Mozilla/5.0 (Linux; Android {rng.choice((8, 9, 10, 11))}; {model} "
                f"Build/{rng.choice('PQRS')}{rng.choice('KP')}Q{rng.randint(1, 3)}."
                f"{rng.randint(180000, 211231)}.{rng.randint(1, 30):03d}; wv) AppleWebKit/537.36 "
                f"(KHTML, like Gecko) Version/4.0 Chrome/{build} Mobile Safari/537.36")
    if family == "win_chrome":
        return (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                f"Gecko) Chrome/{cv}.0.0.0 Safari/537.36")
    if family == "win_edge":
        return (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                f"Gecko) Chrome/{cv}.0.0.0 Safari/537.36 Edg/{build}")
    if family == "win_firefox":
        fv = rng.randint(*FIREFOX)
        return f"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{fv}.0) Gecko/20100101 Firefox/{fv}.0"
    if family == "mac_safari":
        _, sv = rng.choices(IOS, IOS_W)[0]
        return (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
                f"like Gecko) Version/{sv} Safari/605.1.15")
    if family == "mac_chrome":
        return (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, "
                f"like Gecko) Chrome/{cv}.0.0.0 Safari/537.36")
    if family == "linux_firefox":
        fv = rng.randint(*FIREFOX)
        return f"Mozilla/5.0 (X11; Linux x86_64; rv:{fv}.0) Gecko/20100101 Firefox/{fv}.0"
    if family in ("tor", "mullvad"):  # uniform by design: every user sends the same headers
        return (f"Mozilla/5.0 (Windows NT 10.0; rv:{FIREFOX_ESR}.0) Gecko/20100101 "
                f"Firefox/{FIREFOX_ESR}.0")
    if family == "firefox_rfp":
        return (f"Mozilla/5.0 (Windows NT 10.0; rv:{FIREFOX_ESR}.0) Gecko/20100101 "
                f"Firefox/{FIREFOX_ESR}.0")
    if family == "brave":
        return (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                f"Gecko) Chrome/{CHROME[1]}.0.0.0 Safari/537.36")
    if family == "instagram_ios":
        os_v, _ = rng.choices(IOS, IOS_W)[0]
        return (f"Mozilla/5.0 (iPhone; CPU iPhone OS {os_v} like Mac OS X) AppleWebKit/605.1.15 "
                f"(KHTML, like Gecko) Mobile/15E148 Instagram {rng.randint(380, 400)}.0.0."
                f"{rng.randint(10, 40)}.{rng.randint(60, 120)} (iPhone{rng.randint(13, 17)},"
                f"{rng.randint(1, 3)}; iOS {os_v}; en_US; en; scale=3.00; 1179x2556; "
                f"{rng.randint(600000000, 700000000)}; IABMV/1)")
    raise ValueError(family)


PHONE_FAMILIES = ("ios_safari", "android_chrome", "samsung", "ios_chrome")
PHONE_W = (48, 30, 14, 8)
DESKTOP_FAMILIES = ("win_chrome", "win_edge", "mac_safari", "mac_chrome", "win_firefox",
                    "linux_firefox")
DESKTOP_W = (45, 14, 14, 14, 10, 3)


def accept_language(family: str, locale: str) -> str:
    """What the browser family sends for a person whose language is `locale`."""
    lang = locale.split("-", maxsplit=1)[0]
    if family in ("tor", "mullvad", "firefox_rfp"):
        return "en-US,en;q=0.5"
    if family == "brave":
        return locale
    if family in ("win_firefox", "linux_firefox"):
        if lang == "en":
            return f"{locale},en;q=0.5"
        return f"{lang},{locale};q=0.8,en-US;q=0.5,en;q=0.3"
    if family in ("ios_safari", "ipad_safari", "mac_safari", "instagram_ios"):
        return f"{locale},{lang};q=0.9" if lang != "en" or locale != "en-US" else "en-US,en;q=0.9"
    # Chromium family
    if lang == "en":
        return f"{locale},en-US;q=0.9,en;q=0.8" if locale != "en-US" else "en-US,en;q=0.9"
    return f"{locale},{lang};q=0.9,en-US;q=0.8,en;q=0.7"


def new_vid(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=22))


def make_device(rng: random.Random, kind: str = "phone", family: str | None = None,
                *, clears: bool = False) -> Device:
    if family is None:
        family = (rng.choices(PHONE_FAMILIES, PHONE_W)[0] if kind == "phone"
                  else rng.choices(DESKTOP_FAMILIES, DESKTOP_W)[0] if kind == "desktop"
                  else "ipad_safari")
    return Device(user_agent(rng, family), family, kind, new_vid(rng), clears)


def clone_device(rng: random.Random, d: Device) -> Device:
    """The same model and browser version in another person's hand (a new cookie)."""
    return Device(d.ua, d.family, d.kind, new_vid(rng), d.clears)


# -- names and mailboxes --------------------------------------------------------------------

FIRST = ("james", "mary", "john", "patricia", "robert", "jennifer", "michael", "linda", "david",
         "elizabeth", "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas",
         "sarah", "chris", "karen", "daniel", "lisa", "matthew", "nancy", "anthony", "betty",
         "mark", "sandra", "paul", "ashley", "steven", "emily", "andrew", "donna", "josh",
         "michelle", "kevin", "carol", "brian", "amanda", "george", "melissa", "tim", "deborah",
         "ryan", "laura", "jacob", "rebecca", "gary", "sharon", "nick", "cynthia", "eric",
         "kathleen", "jonathan", "amy", "stephen", "anna", "larry", "angela", "justin", "emma",
         "scott", "olivia", "noah", "sophie", "liam", "mia", "lukas", "lea", "felix", "hannah",
         "lucas", "chloe", "hugo", "ines", "mateo", "lucia", "jan", "zofia", "arjun", "priya",
         "rahul", "ananya", "joao", "ana", "pedro", "beatriz", "kenji", "yuki", "wei", "mei",
         "thabo", "naledi", "oliver", "isla", "jack", "grace", "leo", "ava", "max", "ella")
LAST = ("smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis",
        "rodriguez", "martinez", "hernandez", "lopez", "gonzalez", "wilson", "anderson",
        "thomas", "taylor", "moore", "jackson", "martin", "lee", "perez", "thompson", "white",
        "harris", "sanchez", "clark", "ramirez", "lewis", "robinson", "walker", "young", "allen",
        "king", "wright", "scott", "torres", "nguyen", "hill", "flores", "green", "adams",
        "nelson", "baker", "hall", "rivera", "campbell", "mitchell", "carter", "roberts",
        "mueller", "schmidt", "schneider", "fischer", "weber", "dubois", "moreau", "laurent",
        "bernard", "kowalski", "nowak", "wisniewski", "devries", "jansen", "silva", "santos",
        "oliveira", "sato", "suzuki", "tanaka", "patel", "sharma", "singh", "kumar", "naidoo",
        "dlamini", "murphy", "kelly", "obrien", "walsh", "byrne", "evans", "hughes", "price")
PROVIDERS = {
    "default": (("gmail.com", 48), ("yahoo.com", 10), ("outlook.com", 9), ("hotmail.com", 9),
                ("icloud.com", 10), ("proton.me", 3), ("aol.com", 2)),
    "DE": (("gmail.com", 35), ("gmx.de", 20), ("web.de", 20), ("outlook.de", 8),
           ("t-online.de", 8), ("icloud.com", 6), ("posteo.de", 3)),
    "FR": (("gmail.com", 45), ("orange.fr", 15), ("hotmail.fr", 12), ("free.fr", 8),
           ("laposte.net", 8), ("icloud.com", 8), ("yahoo.fr", 4)),
    "GB": (("gmail.com", 45), ("hotmail.co.uk", 14), ("outlook.com", 10), ("icloud.com", 12),
           ("yahoo.co.uk", 8), ("btinternet.com", 5), ("sky.com", 3)),
}
TYPO_DOMAINS = {"gmail.com": ("gmial.com", "gmai.com", "gmail.co", "gnail.com", "gmal.com"),
                "yahoo.com": ("yaho.com", "yahooo.com"), "outlook.com": ("outlok.com",),
                "hotmail.com": ("hotmial.com", "hotmal.com"), "icloud.com": ("iclould.com",)}


def provider(rng: random.Random, country: str) -> str:
    table = PROVIDERS.get(country, PROVIDERS["default"])
    return rng.choices([d for d, _ in table], [w for _, w in table])[0]


def local_part(rng: random.Random) -> str:
    """A mailbox name as people pick them: some collide across unrelated people, on purpose."""
    f, last = rng.choice(FIRST), rng.choice(LAST)
    style = rng.random()
    if style < 0.3:
        base = f"{f}.{last}"
    elif style < 0.5:
        base = f"{f}{last}"
    elif style < 0.65:
        base = f"{f[0]}{last}"
    elif style < 0.8:
        base = f"{f}_{last}"
    else:
        base = f"{f}{last[:3]}"
    r = rng.random()
    if r < 0.45:
        return base
    if r < 0.8:
        return f"{base}{rng.randint(1, 99)}"
    return f"{base}{rng.randint(1960, 2008)}"


def email(rng: random.Random, country: str) -> str:
    return f"{local_part(rng)}@{provider(rng, country)}"
