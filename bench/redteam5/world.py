"""redteam5's world: one mobile-first market (cities, carriers with carrier-grade NAT, home
broadband, venues with public Wi-Fi, schools, co-working spaces, company VPN egress, privacy
relays, data centres, residential proxies, foreign carriers), its address plan written as
MaxMind-format City, ASN and Anonymous-IP databases, and its phones (models, OS builds,
in-app browsers with their own cookie jars, the merchant's app).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.redteam5 import mmdb

# -- markets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Market:
    iso: str
    country: str
    tz: int  # hours from UTC
    tz_name: str
    lang: str  # Accept-Language of most phones
    alt_lang: str  # a second common one
    locale: str  # pt_BR, as apps write it
    currency: str
    plans: tuple[int, int, int]  # monthly, quarterly, annual in minor units
    cities: tuple[tuple[str, str, float, float], ...]  # name, region, lat, lon
    carriers: tuple[str, ...]
    isps: tuple[str, ...]
    mail: tuple[str, ...]
    names: tuple[str, ...]
    surnames: tuple[str, ...]


MARKETS: tuple[Market, ...] = (
    Market("BR", "Brazil", -3, "America/Sao_Paulo", "pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7",
           "pt-BR,pt;q=0.9", "pt_BR", "BRL", (2990, 7990, 23990),
           (("Sao Paulo", "SP", -23.55, -46.63), ("Rio de Janeiro", "RJ", -22.91, -43.17),
            ("Belo Horizonte", "MG", -19.92, -43.94), ("Salvador", "BA", -12.97, -38.50),
            ("Recife", "PE", -8.05, -34.88), ("Curitiba", "PR", -25.43, -49.27),
            ("Fortaleza", "CE", -3.73, -38.52), ("Porto Alegre", "RS", -30.03, -51.23)),
           ("Telefonica Brasil S.A", "Claro S.A.", "TIM S/A", "Oi S.A."),
           ("Vivo Fibra", "Claro NET Virtua", "Brisanet Servicos de Telecomunicacoes",
            "Algar Telecom"),
           ("gmail.com", "hotmail.com", "outlook.com", "yahoo.com.br", "uol.com.br",
            "bol.com.br", "icloud.com"),
           ("ana", "joao", "maria", "pedro", "lucas", "juliana", "gabriel", "beatriz",
            "rafael", "larissa", "thiago", "camila", "bruno", "fernanda", "mateus", "leticia"),
           ("silva", "santos", "oliveira", "souza", "lima", "pereira", "costa", "rodrigues",
            "almeida", "nascimento", "carvalho", "araujo", "ribeiro", "gomes")),
    Market("ID", "Indonesia", 7, "Asia/Jakarta", "id-ID,id;q=0.9,en-US;q=0.8,en;q=0.7",
           "en-US,en;q=0.9,id;q=0.8", "id_ID", "IDR", (4900000, 12900000, 39900000),
           (("Jakarta", "JK", -6.21, 106.85), ("Surabaya", "JI", -7.25, 112.75),
            ("Bandung", "JB", -6.92, 107.61), ("Medan", "SU", 3.59, 98.67),
            ("Semarang", "JT", -6.97, 110.42), ("Makassar", "SN", -5.15, 119.43),
            ("Yogyakarta", "YO", -7.80, 110.36)),
           ("PT Telekomunikasi Selular", "PT Indosat Tbk", "PT XL Axiata Tbk",
            "PT Smartfren Telecom"),
           ("PT Telkom Indonesia (IndiHome)", "PT Link Net (First Media)", "PT Biznet",
            "PT Eka Mas Republik (MyRepublic)"),
           ("gmail.com", "yahoo.com", "yahoo.co.id", "outlook.com", "icloud.com"),
           ("budi", "siti", "agus", "dewi", "rizky", "putri", "andi", "ayu", "fajar", "indah",
            "dimas", "nur", "yoga", "ratna", "bayu", "sri"),
           ("santoso", "wijaya", "saputra", "pratama", "hidayat", "kusuma", "setiawan",
            "nugroho", "lestari", "purnomo", "hakim", "siregar")),
    Market("MX", "Mexico", -6, "America/Mexico_City", "es-MX,es;q=0.9,en-US;q=0.8,en;q=0.7",
           "es-419,es;q=0.9", "es_MX", "MXN", (12900, 34900, 119900),
           (("Mexico City", "CMX", 19.43, -99.13), ("Guadalajara", "JAL", 20.66, -103.35),
            ("Monterrey", "NLE", 25.69, -100.32), ("Puebla", "PUE", 19.04, -98.21),
            ("Tijuana", "BCN", 32.51, -117.04), ("Merida", "YUC", 20.97, -89.62),
            ("Queretaro", "QUE", 20.59, -100.39)),
           ("Radiomovil Dipsa (Telcel)", "AT&T Comunicaciones Digitales",
            "Pegaso PCS (Movistar)", "Altan Redes"),
           ("Telmex (Infinitum)", "Total Play Telecomunicaciones", "Megacable",
            "Izzi Telecom"),
           ("gmail.com", "hotmail.com", "outlook.com", "yahoo.com.mx", "icloud.com",
            "live.com.mx"),
           ("jose", "maria", "luis", "guadalupe", "carlos", "fernanda", "jorge", "daniela",
            "miguel", "valeria", "alejandro", "ximena", "diego", "sofia", "ricardo", "paola"),
           ("hernandez", "garcia", "martinez", "lopez", "gonzalez", "perez", "rodriguez",
            "sanchez", "ramirez", "cruz", "flores", "gomez", "morales", "reyes")),
    Market("TR", "Turkey", 3, "Europe/Istanbul", "tr-TR,tr;q=0.9,en-US;q=0.8,en;q=0.7",
           "tr,en;q=0.9", "tr_TR", "TRY", (9999, 26999, 89999),
           (("Istanbul", "34", 41.01, 28.98), ("Ankara", "06", 39.93, 32.86),
            ("Izmir", "35", 38.42, 27.14), ("Bursa", "16", 40.19, 29.06),
            ("Antalya", "07", 36.90, 30.70), ("Adana", "01", 37.00, 35.32)),
           ("Turkcell Iletisim Hizmetleri A.S.", "Vodafone Net Iletisim", "Turk Telekom Mobil"),
           ("Turk Telekomunikasyon A.S. (TTNET)", "Superonline Iletisim", "Turknet",
            "Millenicom"),
           ("gmail.com", "hotmail.com", "outlook.com", "yandex.com", "icloud.com",
            "yahoo.com"),
           ("mehmet", "ayse", "mustafa", "fatma", "ahmet", "zeynep", "emre", "elif", "burak",
            "merve", "can", "esra", "murat", "seda", "hakan", "ece"),
           ("yilmaz", "kaya", "demir", "sahin", "celik", "yildiz", "aydin", "ozturk",
            "arslan", "dogan", "kilic", "aslan")),
    Market("PH", "Philippines", 8, "Asia/Manila", "en-PH,en-US;q=0.9,en;q=0.8,fil;q=0.7",
           "en-US,en;q=0.9", "en_PH", "PHP", (14900, 39900, 129900),
           (("Quezon City", "00", 14.68, 121.04), ("Manila", "00", 14.60, 120.98),
            ("Cebu City", "07", 10.32, 123.89), ("Davao City", "11", 7.19, 125.46),
            ("Makati", "00", 14.55, 121.02), ("Iloilo City", "06", 10.72, 122.56)),
           ("Globe Telecom Inc.", "Smart Communications Inc.", "DITO Telecommunity"),
           ("PLDT Fibr", "Converge ICT Solutions", "Sky Cable Broadband", "Globe At Home"),
           ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "ymail.com"),
           ("mark", "angel", "john", "princess", "joshua", "kristine", "christian", "mary",
            "paolo", "jasmine", "carlo", "nicole", "rey", "joy", "miguel", "bea"),
           ("dela cruz", "santos", "reyes", "garcia", "mendoza", "bautista", "villanueva",
            "ramos", "aquino", "castillo", "flores", "gonzales")),
)

FOREIGN = (("US", "United States", "America/New_York", 40.71, -74.01, "T-Mobile USA, Inc."),
           ("PT", "Portugal", "Europe/Lisbon", 38.72, -9.14, "MEO - Servicos de Comunicacoes"),
           ("ES", "Spain", "Europe/Madrid", 40.42, -3.70, "Telefonica de Espana"),
           ("JP", "Japan", "Asia/Tokyo", 35.68, 139.69, "NTT DOCOMO, INC."),
           ("AE", "United Arab Emirates", "Asia/Dubai", 25.20, 55.27,
            "Emirates Telecommunications"),
           ("DE", "Germany", "Europe/Berlin", 50.11, 8.68, "Telekom Deutschland GmbH"))

DATACENTRES = (("DigitalOcean, LLC", 14061, "US", "United States", "America/New_York"),
               ("OVH SAS", 16276, "FR", "France", "Europe/Paris"),
               ("Hetzner Online GmbH", 24940, "DE", "Germany", "Europe/Berlin"),
               ("Amazon.com, Inc.", 16509, "US", "United States", "America/Chicago"),
               ("Contabo GmbH", 51167, "DE", "Germany", "Europe/Berlin"))

SAFE_FIRST = (23, 31, 37, 41, 45, 62, 77, 81, 88, 91, 95, 103, 110, 114, 118, 121, 131, 138,
              141, 151, 152, 156, 161, 168, 175, 177, 179, 181, 186, 187, 189, 190, 191, 200,
              201)


@dataclass
class Net:
    """One /24 and what the geo databases say of it."""
    base: str  # "a.b.c"
    kind: str  # carrier, isp, venue, school, cowork, corpvpn, relay, dc, foreign, store
    asn: int
    org: str
    iso: str
    country: str
    city: str | None
    region: str | None
    lat: float
    lon: float
    tz_name: str
    anon: dict[str, bool] = field(default_factory=dict)
    used: int = 0

    def ip(self, host: int) -> str:
        return f"{self.base}.{host}"


@dataclass
class Carrier:
    name: str
    asn: int
    nets: list[Net]
    hot: list[str]  # heavily shared NAT addresses


class World:
    """The address plan of one seed. Every draw goes through `rng`."""

    def __init__(self, rng: random.Random, market: Market, nat_share: float, n_hot: int,
                 carrier_blocks: int) -> None:
        self.rng = rng
        self.m = market
        self.nat_share = nat_share
        self.nets: list[Net] = []
        self._flagged: dict[str, tuple[Net, dict[str, bool]]] = {}
        self._taken: set[str] = set()
        self._asn = rng.randrange(20000, 60000)
        cities = market.cities
        self.carriers: list[Carrier] = []
        for name in market.carriers:
            asn = self._next_asn()
            # Carrier NAT gateways geolocate to a few big cities, whoever is behind them.
            nets = [self._net("carrier", asn, name, cities[rng.randrange(min(3, len(cities)))])
                    for _ in range(carrier_blocks)]
            hot = [n.ip(rng.randrange(2, 254)) for n in nets for _ in range(max(1, n_hot
                                                                             // len(nets)))]
            self.carriers.append(Carrier(name, asn, nets, hot))
        self.carrier_weights = [0.4, 0.3, 0.2, 0.1][:len(self.carriers)]
        self.isp_asn = {name: self._next_asn() for name in market.isps}
        self._isp_nets: dict[tuple[str, str], Net] = {}
        self.edu_asn = self._next_asn()
        self.biz_asn = self._next_asn()
        self.zscaler = self._net("corpvpn", 53813, "Zscaler, Inc.", cities[0],
                                 anon={"is_hosting_provider": True})
        relay_city = cities[0]
        self.relays = [self._net("relay", asn, org, relay_city,
                                 anon={"is_anonymous": True, "is_hosting_provider": True})
                       for asn, org in ((36183, "Akamai Technologies, Inc."),
                                        (13335, "Cloudflare, Inc."))]
        self.dcs: list[Net] = []
        for org, asn, iso, country, tz in DATACENTRES:
            n = self._net("dc", asn, org, None, anon={"is_hosting_provider": True})
            n.iso, n.country, n.tz_name, n.city = iso, country, tz, None
            self.dcs.append(n)
        self.foreign: dict[str, Net] = {}
        for iso, country, tz, lat, lon, org in FOREIGN:
            n = self._net("foreign", self._next_asn(), org, None)
            n.iso, n.country, n.tz_name, n.lat, n.lon, n.city = iso, country, tz, lat, lon, None
            self.foreign[iso] = n

    # -- allocation -------------------------------------------------------------------------

    def _next_asn(self) -> int:
        self._asn += self.rng.randrange(1, 900)
        return self._asn

    def _net(self, kind: str, asn: int, org: str, city: tuple[str, str, float, float] | None,
             anon: dict[str, bool] | None = None) -> Net:
        while True:
            base = (f"{self.rng.choice(SAFE_FIRST)}.{self.rng.randrange(1, 255)}."
                    f"{self.rng.randrange(0, 255)}")
            if base not in self._taken:
                break
        self._taken.add(base)
        c = city or self.m.cities[0]
        n = Net(base, kind, asn, org, self.m.iso, self.m.country, c[0], c[1], c[2], c[3],
                self.m.tz_name, dict(anon or {}))
        self.nets.append(n)
        return n

    def carrier(self) -> Carrier:
        return self.rng.choices(self.carriers, self.carrier_weights)[0]

    def mobile_ip(self, carrier: Carrier) -> str:
        """The address a phone on mobile data shows now: a heavily shared NAT address with
        probability nat_share, else one of the carrier's pool."""
        if self.rng.random() < self.nat_share:
            return self.rng.choice(carrier.hot)
        return self.rng.choice(carrier.nets).ip(self.rng.randrange(2, 254))

    def fixed_ip(self, kind: str, city: tuple[str, str, float, float], org: str | None = None,
                 anon: dict[str, bool] | None = None) -> str:
        """A new address that stays with one home, venue, school, office or store."""
        if kind in ("isp", "venue", "store", "proxy"):
            org = org or self.rng.choice(self.m.isps)
            asn = self.isp_asn[org]
        elif kind == "school":
            org, asn = org or "Rede Nacional de Ensino e Pesquisa", self.edu_asn
        else:
            org, asn = org or "Business Fibre Networks", self.biz_asn
        key = (org, city[0])
        net = self._isp_nets.get(key)
        if net is None or net.used >= 250:
            net = self._net("isp", asn, org, city)
            self._isp_nets[key] = net
        net.used += 1
        host = net.used + 1
        ip = net.ip(host)
        if anon:  # a residential proxy exit: flag only its own /32 (written as its own network)
            self._flagged[ip] = (net, dict(anon))
        return ip

    # -- geo databases ----------------------------------------------------------------------

    def write_geo(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        city: list[tuple[str, dict[str, Any]]] = []
        asn: list[tuple[str, dict[str, Any]]] = []
        anon: list[tuple[str, dict[str, Any]]] = []
        for n in self.nets:
            rec: dict[str, Any] = {
                "continent": {"code": "XX", "names": {"en": "Somewhere"}},
                "country": {"iso_code": n.iso, "names": {"en": n.country}},
                "location": {"latitude": n.lat, "longitude": n.lon, "time_zone": n.tz_name,
                             "accuracy_radius": 50 if n.city else 500},
            }
            if n.city:
                rec["city"] = {"names": {"en": n.city}}
                rec["subdivisions"] = [{"iso_code": n.region, "names": {"en": n.region}}]
            cidr = f"{n.base}.0/24"
            city.append((cidr, rec))
            asn.append((cidr, {"autonomous_system_number": n.asn,
                               "autonomous_system_organization": n.org}))
            flags = {k: v for k, v in n.anon.items() if v}
            if flags:
                anon.append((cidr, flags))
        for ip, (_, extra) in sorted(self._flagged.items()):
            anon.append((f"{ip}/32", {"is_anonymous": True, **extra}))
        mmdb.write(folder / "GeoLite2-City.mmdb", "GeoLite2-City", city)
        mmdb.write(folder / "GeoLite2-ASN.mmdb", "GeoLite2-ASN", asn)
        mmdb.write(folder / "GeoIP2-Anonymous-IP.mmdb", "GeoIP2-Anonymous-IP", anon)


# -- phones -----------------------------------------------------------------------------------

ANDROID = (("SM-A546E", "samsung", "a54x"), ("SM-A155M", "samsung", "a15"),
           ("SM-A245M", "samsung", "a24"), ("SM-S911B", "samsung", "dm1q"),
           ("moto g84 5G", "motorola", "bangkk"), ("moto g54 5G", "motorola", "cancunf"),
           ("23021RAAEG", "Redmi", "tapas"), ("2201117TG", "Redmi", "spes"),
           ("CPH2591", "OPPO", "OP5A1"), ("V2247", "vivo", "PD2247"),
           ("RMX3710", "realme", "RE58C2"), ("23108RN04Y", "Redmi", "gale"),
           ("SM-A145M", "samsung", "a14"), ("TECNO KI5k", "TECNO", "KI5k"))
IPHONES = ("iPhone12,1", "iPhone13,2", "iPhone14,5", "iPhone14,7", "iPhone15,2", "iPhone15,4",
           "iPhone16,1", "iPhone11,8")
IOS = ("16_6_1", "17_0_3", "17_1_1", "17_1_2", "17_2", "17_2_1")
ANDROID_VER = (("11", "RP1A.200720.012"), ("12", "SP1A.210812.016"),
               ("13", "TP1A.220624.014"), ("14", "UP1A.231005.007"))
CHROME = ("118.0.5993.111", "119.0.6045.163", "119.0.6045.193", "120.0.6099.43",
          "120.0.6099.116")
DESKTOP_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/{major}.0.0.0 Safari/537.36")
MAC_UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
          "Gecko) Version/17.1 Safari/605.1.15")
PREVIEW_BOTS = ("WhatsApp/2.23.24.76 A", "TelegramBot (like TwitterBot)",
                "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)")
CONTEXTS = ("browser", "instagram", "facebook", "tiktok", "telegram")


@dataclass
class Phone:
    """A phone (or a laptop): its builds, and one cookie jar per browsing context (each in-app
    browser keeps its own)."""
    os: str  # android, ios, desktop
    model: str
    brand: str
    code: str
    osv: str
    build: str
    chrome: str
    al: str
    locale: str
    app: str
    app_ver: str
    ig: str
    fb: str
    tt: str
    adid: str  # the advertising / device id the merchant's app reports
    jars: dict[str, str] = field(default_factory=dict)

    def vid(self, ctx: str, rng: random.Random) -> str:
        if ctx not in self.jars:
            self.jars[ctx] = rng_hex(rng, 32)
        return self.jars[ctx]

    def wipe(self, rng: random.Random) -> None:
        """A factory reset or app clone: every cookie and the device id are new."""
        self.jars.clear()
        self.adid = str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def ua(self, ctx: str) -> str:
        if self.os == "desktop":
            if self.model == "mac":
                return MAC_UA
            return DESKTOP_UA.format(major=self.chrome.split(".")[0])
        if self.os == "ios":
            v = self.osv
            head = (f"Mozilla/5.0 (iPhone; CPU iPhone OS {v} like Mac OS X) AppleWebKit/605.1.15 "
                    "(KHTML, like Gecko)")
            if ctx == "instagram":
                return (f"{head} Mobile/15E148 Instagram {self.ig} ({self.model}; iOS {v}; "
                        f"{self.locale}; {self.locale[:2]}; scale=3.00; 1170x2532; "
                        f"54{self.ig[:3]}1)")
            if ctx == "facebook":
                return (f"{head} Mobile/15E148 [FBAN/FBIOS;FBAV/{self.fb};FBDV/{self.model};"
                        f"FBMD/iPhone;FBSN/iOS;FBSV/{v.replace('_', '.')};FBLC/{self.locale}]")
            if ctx == "tiktok":
                return (f"{head} Mobile/15E148 musical_ly_{self.tt} JsSdk/2.0 NetType/WIFI "
                        f"Channel/App Store ByteLocale/{self.locale[:2]} Region/{self.locale[3:]}")
            safari = ".".join(v.split("_")[:2])
            return f"{head} Version/{safari} Mobile/15E148 Safari/604.1"
        wv = (f"Mozilla/5.0 (Linux; Android {self.osv}; {self.model} Build/{self.build}; wv) "
              f"AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/{self.chrome} "
              "Mobile Safari/537.36")
        if ctx == "instagram":
            return (f"{wv} Instagram {self.ig} Android ({int(self.osv) + 20}/{self.osv}; 420dpi; "
                    f"1080x2400; {self.brand}; {self.model}; {self.code}; qcom; {self.locale}; "
                    "541635863)")
        if ctx == "facebook":
            return f"{wv} [FB_IAB/FB4A;FBAV/{self.fb};]"
        if ctx == "tiktok":
            return (f"{wv} musical_ly_{self.tt.replace('.', '')} JsSdk/1.0 NetType/4G "
                    f"Channel/googleplay AppName/musical_ly app_version/{self.tt} "
                    f"ByteLocale/{self.locale.replace('_', '-')} Region/{self.locale[3:]}")
        if ctx == "telegram":
            return wv
        if ctx == "focus":
            return (f"Mozilla/5.0 (Linux; Android {self.osv}) AppleWebKit/537.36 (KHTML, like "
                    f"Gecko) Version/4.0 Focus/120.0 Chrome/{self.chrome} Mobile Safari/537.36")
        # Chrome's reduced user agent: every Android phone of one Chrome major looks alike.
        return ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{self.chrome.split('.')[0]}.0.0.0 Mobile Safari/537.36")

    def app_ua(self) -> str:
        if self.os == "ios":
            return (f"{self.app}/{self.app_ver} ({self.model}; iOS {self.osv.replace('_', '.')}; "
                    "Scale/3.00)")
        if self.os == "android":
            return (f"Dalvik/2.1.0 (Linux; U; Android {self.osv}; {self.model} "
                    f"Build/{self.build})")
        return self.ua("browser")


def rng_hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def new_phone(rng: random.Random, m: Market, app: str, *, ios_share: float,
              desktop: bool = False, al: str | None = None) -> Phone:
    app_ver = rng.choice(("5.12.0", "5.12.1", "5.13.0", "5.14.2"))
    lang = al or (m.lang if rng.random() < 0.85 else m.alt_lang)
    ig = rng.choice(("307.0.0.34.111", "309.0.0.40.113", "310.1.0.41.112"))
    fb = rng.choice(("440.0.0.30.117", "441.0.0.33.113", "442.0.0.43.108"))
    tt = rng.choice(("32.1.4", "32.3.3", "32.5.4"))
    adid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    chrome = rng.choice(CHROME)

    def make(spec: tuple[str, str, str, str, str, str]) -> Phone:
        os_, model, brand, code, osv, build = spec  # OS, model, brand, code name, version, build
        return Phone(os_, model, brand, code, osv, build, chrome, lang, m.locale, app, app_ver,
                     ig, fb, tt, adid)

    if desktop:
        return make(("desktop", rng.choice(("win", "win", "mac")), "", "", "10", ""))
    if rng.random() < ios_share:
        return make(("ios", rng.choice(IPHONES), "Apple", "", rng.choice(IOS), ""))
    model, brand, code = rng.choice(ANDROID)
    osv, build = rng.choice(ANDROID_VER)
    return make(("android", model, brand, code, osv, build))
