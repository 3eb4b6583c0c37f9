"""redteam6's world: one city market of a food-delivery marketplace (home broadband, mobile
carriers behind carrier-grade NAT, offices, student residences, couriers' hubs, hotels, Apple
iCloud Private Relay egress, data centres, residential proxies, foreign carriers), its address
plan written as MaxMind-format City, ASN and Anonymous-IP databases (bench/redteam5/mmdb.py's
generic writer), and its devices (phones, tablets, laptops; one cookie jar per browser).

Every draw goes through the seed's `random.Random`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.redteam5 import mmdb


@dataclass(frozen=True)
class Market:
    iso: str
    country: str
    cities: tuple[tuple[str, float, float], ...]  # name, latitude, longitude
    tz: int  # UTC offset, hours
    tz_name: str
    lang: str  # the market's Accept-Language
    providers: tuple[str, ...]  # mailbox providers, most common first
    isps: tuple[str, ...]
    carriers: tuple[str, ...]
    migrant_lang: str  # a language many couriers of this market speak


MARKETS = (
    Market("MX", "Mexico", (("Mexico City", 19.43, -99.13), ("Guadalajara", 20.67, -103.35),
                            ("Monterrey", 25.69, -100.32), ("Puebla", 19.04, -98.21)),
           -6, "America/Mexico_City", "es-MX,es;q=0.9,en;q=0.8",
           ("gmail.com", "hotmail.com", "outlook.com", "yahoo.com.mx", "icloud.com",
            "live.com.mx"),
           ("Telmex Infinitum", "Totalplay", "Izzi Telecom", "Megacable"),
           ("Telcel", "AT&T Mexico", "Movistar Mexico"), "es-VE,es;q=0.9"),
    Market("BR", "Brazil", (("Sao Paulo", -23.55, -46.63), ("Rio de Janeiro", -22.91, -43.17),
                            ("Belo Horizonte", -19.92, -43.94), ("Curitiba", -25.43, -49.27)),
           -3, "America/Sao_Paulo", "pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7",
           ("gmail.com", "hotmail.com", "outlook.com", "yahoo.com.br", "uol.com.br",
            "icloud.com", "bol.com.br"),
           ("Vivo Fibra", "Claro NET", "Oi Fibra", "TIM Live"),
           ("Vivo", "Claro BR", "TIM Brasil"), "es-VE,es;q=0.9,pt;q=0.7"),
    Market("TR", "Turkey", (("Istanbul", 41.01, 28.98), ("Ankara", 39.93, 32.86),
                            ("Izmir", 38.42, 27.14)),
           3, "Europe/Istanbul", "tr-TR,tr;q=0.9,en-US;q=0.8,en;q=0.7",
           ("gmail.com", "hotmail.com", "outlook.com", "yandex.com", "icloud.com",
            "yahoo.com"),
           ("Turk Telekom", "Superonline", "Vodafone Net", "TurkNet"),
           ("Turkcell", "Vodafone TR", "Turk Telekom Mobil"), "ar-SY,ar;q=0.9"),
    Market("PL", "Poland", (("Warsaw", 52.23, 21.01), ("Krakow", 50.06, 19.94),
                            ("Wroclaw", 51.11, 17.03), ("Gdansk", 54.35, 18.65)),
           1, "Europe/Warsaw", "pl-PL,pl;q=0.9,en-US;q=0.8,en;q=0.7",
           ("gmail.com", "wp.pl", "o2.pl", "onet.pl", "interia.pl", "outlook.com",
            "icloud.com"),
           ("Orange Polska", "UPC Polska", "Netia", "Vectra"),
           ("Play", "Plus", "T-Mobile PL", "Orange PL"), "uk-UA,uk;q=0.9,ru;q=0.8"),
    Market("ZA", "South Africa", (("Johannesburg", -26.2, 28.05), ("Cape Town", -33.92, 18.42),
                                  ("Durban", -29.86, 31.02), ("Pretoria", -25.75, 28.19)),
           2, "Africa/Johannesburg", "en-ZA,en;q=0.9",
           ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "webmail.co.za",
            "mweb.co.za"),
           ("Vumatel", "Openserve", "Afrihost", "Cool Ideas"),
           ("Vodacom", "MTN SA", "Cell C", "Telkom Mobile"), "en-ZW,en;q=0.9,sn;q=0.7"),
    Market("PH", "Philippines", (("Manila", 14.6, 120.98), ("Quezon City", 14.68, 121.04),
                                 ("Cebu City", 10.32, 123.89), ("Davao", 7.19, 125.46)),
           8, "Asia/Manila", "en-PH,en;q=0.9,fil;q=0.8",
           ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com"),
           ("PLDT Fibr", "Globe At Home", "Converge ICT", "Sky Fiber"),
           ("Smart", "Globe Telecom", "DITO"), "fil-PH,fil;q=0.9,en;q=0.8"),
)

FIRST_OCTETS = (31, 37, 45, 62, 77, 78, 80, 85, 89, 91, 94, 95, 109, 151, 176, 177, 179, 181,
                186, 187, 189, 190, 200, 201)


@dataclass
class Net:
    """One /24 and what the geo databases say of it."""

    prefix: str  # "a.b.c"
    kind: str  # home, cgnat, office, dorm, hub, hotel, relay, hosting, proxy, foreign
    asn: int
    org: str
    iso: str
    city: str
    lat: float
    lon: float
    tz_name: str
    anon: dict[str, bool] = field(default_factory=dict)
    used: int = 0

    def ip(self, host: int) -> str:
        return f"{self.prefix}.{1 + host % 253}"

    def next_ip(self) -> str:
        self.used += 1
        return self.ip(self.used)


class World:
    """The address plan of one seed."""

    def __init__(self, rng: random.Random, market: Market) -> None:
        self.rng = rng
        self.m = market
        self.nets: list[Net] = []
        self._asn_prefix: dict[int, tuple[int, int, list[int]]] = {}
        self._asn_no = 0
        self._asns: dict[str, int] = {}
        self.isps = list(market.isps)
        self.carriers = list(market.carriers)
        # Carrier-grade NAT: each carrier has a few /24s whose addresses thousands share.
        self.cgnat: dict[str, list[Net]] = {
            c: [self.net("cgnat", c) for _ in range(rng.randint(1, 3))] for c in self.carriers}
        self.cgnat_size = {c: rng.randint(6, 60) for c in self.carriers}
        self.relays = [self.net("relay", rng.choice(["Akamai International B.V.",
                                                     "Cloudflare, Inc."]),
                                anon={"is_anonymous": True})
                       for _ in range(rng.randint(2, 4))]
        self.relay_size = rng.randint(8, 40)
        self.hosting = [self.net("hosting", org, anon={"is_anonymous": True,
                                                      "is_hosting_provider": True})
                        for org in rng.sample(["DigitalOcean, LLC", "OVH SAS", "Hetzner Online",
                                               "Amazon.com, Inc.", "M247 Europe SRL"], 3)]
        self.foreign = [self.net("foreign", org, iso=iso, city=city)
                        for org, iso, city in rng.sample([
                            ("Verizon Wireless", "US", "Houston"), ("Vodafone Spain", "ES",
                                                                     "Madrid"),
                            ("Deutsche Telekom", "DE", "Berlin"), ("EE Limited", "GB",
                                                                    "London"),
                            ("Etisalat", "AE", "Dubai"), ("Rogers", "CA", "Toronto")], 3)]
        self._home_nets: dict[tuple[str, str], list[Net]] = {}
        self._proxy_nets: list[Net] = []
        self.proxy_flagged = rng.uniform(0.0, 0.4)  # share of proxy /24s the Anonymous-IP db knows

    # -- allocation ---------------------------------------------------------------------------

    def _asn(self, org: str) -> int:
        if org not in self._asns:
            self._asn_no += 1
            self._asns[org] = 1000 + 7919 * self._asn_no % 60000 + self._asn_no
        return self._asns[org]

    def net(self, kind: str, org: str, *, city: str | None = None, iso: str | None = None,
            anon: dict[str, bool] | None = None) -> Net:
        asn = self._asn(org)
        if asn not in self._asn_prefix:
            while True:
                a, b = self.rng.choice(FIRST_OCTETS), self.rng.randint(0, 255)
                if all((a, b) != (x, y) for x, y, _ in self._asn_prefix.values()):
                    break
            self._asn_prefix[asn] = (a, b, [0])
        a, b, counter = self._asn_prefix[asn]
        c = counter[0]
        counter[0] += 1
        if iso is None:
            name, lat, lon = (next((x for x in self.m.cities if x[0] == city), self.m.cities[0])
                              if city else self.rng.choice(self.m.cities))
            iso, tz = self.m.iso, self.m.tz_name
        else:
            name, lat, lon, tz = city or "?", 0.0, 0.0, "UTC"
        n = Net(f"{a}.{b}.{c}", kind, asn, org, iso, name, lat, lon, tz, anon or {})
        self.nets.append(n)
        return n

    def home_ip(self, city: str | None = None) -> str:
        """A household's broadband address (one per home; homes of one ISP share /24s)."""
        isp = self.rng.choice(self.isps)
        city = city or self.rng.choice(self.m.cities)[0]
        nets = self._home_nets.setdefault((isp, city), [])
        if not nets or nets[-1].used >= 200:
            nets.append(self.net("home", isp, city=city))
        return nets[-1].next_ip()

    def site(self, kind: str) -> Net:
        """An office, student residence, couriers' hub or hotel: a /24 of a broadband ISP."""
        return self.net(kind, self.rng.choice(self.isps))

    def carrier_ip(self, carrier: str) -> str:
        net = self.rng.choice(self.cgnat[carrier])
        return net.ip(self.rng.randrange(self.cgnat_size[carrier]))

    def relay_ip(self, region: int) -> str:
        """An iCloud Private Relay egress: many users of one region share a handful."""
        net = self.relays[region % len(self.relays)]
        return net.ip(self.rng.randrange(self.relay_size))

    def proxy_ip(self) -> str:
        """A residential proxy exit: a home broadband address, sometimes known to the db."""
        if not self._proxy_nets or self.rng.random() < 0.25:
            flagged = self.rng.random() < self.proxy_flagged
            self._proxy_nets.append(self.net(
                "proxy", self.rng.choice(self.isps),
                anon={"is_anonymous": True, "is_residential_proxy": True} if flagged else None))
        return self.rng.choice(self._proxy_nets).ip(self.rng.randrange(250))

    def hosting_ip(self) -> str:
        return self.rng.choice(self.hosting).ip(self.rng.randrange(40))

    def foreign_ip(self) -> str:
        return self.rng.choice(self.foreign).ip(self.rng.randrange(50))

    # -- geo databases ------------------------------------------------------------------------

    def write_geo(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        city: list[tuple[str, dict[str, Any]]] = []
        asn: list[tuple[str, dict[str, Any]]] = []
        anon: list[tuple[str, dict[str, Any]]] = []
        for n in self.nets:
            cidr = f"{n.prefix}.0/24"
            city.append((cidr, {"country": {"iso_code": n.iso, "names": {"en": n.iso}},
                                "city": {"names": {"en": n.city}},
                                "location": {"latitude": n.lat, "longitude": n.lon,
                                             "time_zone": n.tz_name}}))
            asn.append((cidr, {"autonomous_system_number": n.asn,
                               "autonomous_system_organization": n.org}))
            if n.anon:
                anon.append((cidr, dict(n.anon)))
        mmdb.write(folder / "GeoLite2-City.mmdb", "GeoLite2-City", city)
        mmdb.write(folder / "GeoLite2-ASN.mmdb", "GeoLite2-ASN", asn)
        mmdb.write(folder / "GeoIP2-Anonymous-IP.mmdb", "GeoIP2-Anonymous-IP", anon)


# -- devices ----------------------------------------------------------------------------------

ANDROID_MODELS = ("SM-A145M", "SM-A055M", "SM-A155M", "SM-A546E", "SM-S918B", "SM-A256E",
                  "23053RN02L", "2312DRAABG", "22120RN86G", "moto g54 5G", "moto g04",
                  "CPH2591", "RMX3834", "Infinix X6833B", "TECNO KI5q")
BUDGET_MODELS = ("SM-A055M", "moto g04", "TECNO KI5q", "2312DRAABG", "Infinix X6833B")
IPHONES = ("iPhone12,1", "iPhone13,2", "iPhone14,5", "iPhone14,7", "iPhone15,4", "iPhone16,2")


@dataclass
class Device:
    """A phone, tablet or computer: its builds and one cookie jar per browser on it."""

    kind: str  # android, iphone, ipad, windows, mac
    model: str
    os: str
    chrome: int
    carrier: str | None
    lang: str
    jars: dict[str, str] = field(default_factory=dict)

    def ua(self, browser: str = "default") -> str:
        c = self.chrome
        if self.kind == "android":
            if browser == "instagram":
                return (f"Mozilla/5.0 (Linux; Android {self.os}; {self.model} Build/"
                        f"UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
                        f"Version/4.0 Chrome/{c}.0.6778.135 Mobile Safari/537.36 Instagram "
                        f"357.0.0.25.101 Android")
            if browser == "facebook":
                return (f"Mozilla/5.0 (Linux; Android {self.os}; {self.model} Build/"
                        f"UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
                        f"Version/4.0 Chrome/{c}.0.6778.135 Mobile Safari/537.36 "
                        f"[FB_IAB/FB4A;FBAV/489.0.0.66.81;]")
            if self.model.startswith("SM-") and browser == "samsung":
                return (f"Mozilla/5.0 (Linux; Android {self.os}; {self.model}) AppleWebKit/"
                        f"537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/{c - 9}.0.0.0 "
                        f"Mobile Safari/537.36")
            return (f"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like "
                    f"Gecko) Chrome/{c}.0.0.0 Mobile Safari/537.36")
        if self.kind in ("iphone", "ipad"):
            v = self.os.replace(".", "_")
            dev = "iPhone; CPU iPhone OS" if self.kind == "iphone" else "iPad; CPU OS"
            if browser == "instagram":
                return (f"Mozilla/5.0 ({dev} {v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
                        f"like Gecko) Mobile/15E148 Instagram 357.0.0.21.86 ({self.model}; "
                        f"iOS {v}; {self.lang.split(',')[0].replace('-', '_')}; scale=3.00)")
            return (f"Mozilla/5.0 ({dev} {v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
                    f"Gecko) Version/{self.os} Mobile/15E148 Safari/604.1")
        if self.kind == "mac":
            return ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                    f"(KHTML, like Gecko) Version/{self.os} Safari/605.1.15")
        if browser == "edge":
            return (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
                    f"like Gecko) Chrome/{c}.0.0.0 Safari/537.36 Edg/{c}.0.0.0")
        return (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                f"Gecko) Chrome/{c}.0.0.0 Safari/537.36")

    def vid(self, rng: random.Random, browser: str = "default", fresh: bool = False) -> str:
        """The browser's visitor cookie (a new one on first use, or when it was cleared)."""
        if fresh or browser not in self.jars:
            self.jars[browser] = "v" + f"{rng.getrandbits(64):016x}"
        return self.jars[browser]


def new_device(rng: random.Random, market: Market, kind: str | None = None, *,
               model: str | None = None, lang: str | None = None,
               carrier: str | None = None) -> Device:
    kind = kind or rng.choices(("android", "iphone", "windows", "mac", "ipad"),
                               (62, 24, 9, 3, 2))[0]
    chrome = rng.choice((129, 130, 131, 131, 132, 132))
    if kind == "android":
        mdl = model or rng.choice(ANDROID_MODELS)
        os = rng.choice(("12", "13", "14", "14", "15"))
    elif kind in ("iphone", "ipad"):
        mdl = model or (rng.choice(IPHONES) if kind == "iphone" else "iPad13,18")
        os = rng.choice(("17.6", "18.0", "18.1", "18.1", "18.2"))
    else:
        mdl, os = kind, rng.choice(("17.6", "18.1", "18.2"))
    if lang is None:
        lang = market.lang if rng.random() < 0.9 else rng.choice(
            ("en-US,en;q=0.9", market.lang.split(",")[0] + "," + "en;q=0.5"))
    if carrier is None and kind in ("android", "iphone"):
        carrier = rng.choice(market.carriers)
    return Device(kind, mdl, os, chrome, carrier, lang)
