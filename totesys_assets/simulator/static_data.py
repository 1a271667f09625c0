"""The rows every totesys database starts with, as in the real exports (fake Terrific Totes data).

Addresses, counterparties, currencies, departments, staff and payment types never change after
the seed; the first ten designs are the real ones. Values are kept exactly as the source has them,
including department 4's "Leds" and staff 17's apostrophe.
"""

from __future__ import annotations

import polars as pl

from totesys_assets.simulator.timeline import STAFF_SEED_DELAY_MS
from totesys_assets.specs import ENUMS, SOURCE_TABLES, TIMESTAMP_DTYPE

ADDRESS: tuple[tuple, ...] = (
    ("6826 Herzog Via", None, "Avon", "New Patienceburgh", "28441", "Turkey", "1803 637401"),
    ("179 Alexie Cliffs", None, None, "Aliso Viejo", "99305-7380", "San Marino", "9621 880720"),
    ("148 Sincere Fort", None, None, "Lake Charles", "89360", "Samoa", "0730 783349"),
    ("6102 Rogahn Skyway", None, "Bedfordshire", "Olsonside", "47518", "Republic of Korea", "1239 706295"),
    (
        "34177 Upton Track",
        None,
        None,
        "Fort Shadburgh",
        "55993-8850",
        "Bosnia and Herzegovina",
        "0081 009772",
    ),
    ("846 Kailey Island", None, None, "Kendraburgh", "08841", "Zimbabwe", "0447 798320"),
    (
        "75653 Ernestine Ways",
        None,
        "Buckinghamshire",
        "North Deshaun",
        "02813",
        "Faroe Islands",
        "1373 796260",
    ),
    ("0579 Durgan Common", None, None, "Suffolk", "56693-0660", "United Kingdom", "8935 157571"),
    ("644 Edward Garden", None, "Borders", "New Tyra", "30825-5672", "Australia", "0768 748652"),
    (
        "49967 Kaylah Flat",
        "Tremaine Circles",
        "Bedfordshire",
        "Beaulahcester",
        "89470",
        "Democratic People's Republic of Korea",
        "4949 998070",
    ),
    ("249 Bernier Mission", None, "Buckinghamshire", "Corpus Christi", "85111-9300", "Japan", "0222 525870"),
    ("6461 Ernesto Expressway", None, "Berkshire", "Pricetown", "37167-0340", "Tajikistan", "4757 757948"),
    (
        "80828 Arch Dale",
        "Torphy Turnpike",
        None,
        "Shanahanview",
        "60728-5019",
        "Bouvet Island (Bouvetoya)",
        "8806 209655",
    ),
    ("84824 Bryce Common", "Grady Turnpike", None, "Maggiofurt", "50899-1522", "Iraq", "3316 955887"),
    (
        "605 Haskell Trafficway",
        "Axel Freeway",
        None,
        "East Bobbie",
        "88253-4257",
        "Heard Island and McDonald Islands",
        "9687 937447",
    ),
    (
        "511 Orin Extension",
        "Cielo Radial",
        "Buckinghamshire",
        "South Wyatt",
        "04524-5341",
        "Iceland",
        "2372 180716",
    ),
    ("962 Koch Drives", None, None, "Hackensack", "95316-4738", "Indonesia", "5507 549583"),
    ("58805 Sibyl Cliff", "Leuschke Glens", "Bedfordshire", "Lake Arne", "63808", "Kiribati", "0168 407254"),
    (
        "0283 Cole Corner",
        "Izabella Ways",
        "Buckinghamshire",
        "West Briellecester",
        "01138",
        "Sierra Leone",
        "1753 158314",
    ),
    ("22073 Klein Landing", None, None, "Pueblo", "91445", "Republic of Korea", "4003 678621"),
    ("389 Georgette Ridge", None, "Cambridgeshire", "Fresno", "91510-3655", "Bolivia", "8697 474676"),
    (
        "364 Goodwin Streets",
        None,
        None,
        "Sayreville",
        "85544-4254",
        "Svalbard & Jan Mayen Islands",
        "0847 468066",
    ),
    ("822 Providenci Spring", None, "Berkshire", "Derekport", "25541", "Papua New Guinea", "4111 801405"),
    ("8434 Daren Freeway", None, None, "New Torrance", "17110", "Antigua and Barbuda", "5582 055380"),
    ("253 Ullrich Inlet", "Macey Wall", "Borders", "East Arvel", "35397-9952", "Sudan", "0021 366201"),
    ("522 Pacocha Branch", None, "Bedfordshire", "Napa", "77211-4519", "American Samoa", "5794 359212"),
    (
        "7212 Breitenberg View",
        "Nora Bridge",
        "Buckinghamshire",
        "Oakland Park",
        "77499",
        "Guam",
        "2949 665163",
    ),
    ("079 Horacio Landing", None, None, "Utica", "93045", "Austria", "7772 084705"),
    ("37736 Heathcote Lock", "Noemy Pines", None, "Bartellview", "42400-5199", "Congo", "1684 702261"),
    (
        "0336 Ruthe Heights",
        None,
        "Buckinghamshire",
        "Lake Myrlfurt",
        "94545-4284",
        "Falkland Islands (Malvinas)",
        "1083 286132",
    ),
)

COUNTERPARTY: tuple[tuple, ...] = (
    ("Fahey and Sons", 15, "Micheal Toy", "Mrs. Lucy Runolfsdottir"),
    ("Leannon, Predovic and Morar", 28, "Melba Sanford", "Jean Hane III"),
    ("Armstrong Inc", 2, "Jane Wiza", "Myra Kovacek"),
    ("Kohler Inc", 29, "Taylor Haag", "Alfredo Cassin II"),
    ("Frami, Yundt and Macejkovic", 22, "Homer Mitchell", "Ivan Balistreri"),
    ("Mraz LLC", 23, "Florence Casper", "Eva Upton"),
    ("Padberg, Lueilwitz and Johnson", 16, "Ms. Wilma Witting", "Christy O'Hara"),
    ("Grant - Lakin", 16, "Emily Orn", "Veronica Fay"),
    ("Price LLC", 5, "Sheryl Langworth", "Simon Schoen"),
    ("Bosco - Grant", 10, "Ed Halvorson", "Dewey Kuhic"),
    ("Corkery - Nienow", 17, "Glen Emmerich", "Laurie Hermiston"),
    ("Keeling - Emmerich", 7, "Marcus Rogahn", "Rosa Powlowski"),
    ("Hand, Krajcik and Kuhlman", 5, "Sherry Rice", "Elizabeth Senger"),
    ("Hintz, Hayes and Will", 30, "Ms. Susan Haley", "Andrea Kassulke PhD"),
    ("Emmerich, Rohan and Reynolds", 17, "Roderick Waters", "Jake Welch DVM"),
    ("Hartmann, Franecki and Ratke", 14, "Alberta Franecki DDS", "Tracy Quigley"),
    ("Kihn Group", 17, "Dr. Doris Heidenreich", "Gregg Beahan"),
    ("Smith and Sons", 17, "Laura Graham", "Olivia Franey"),
    ("Ondricka, Conroy and Turcotte", 18, "Pearl Kreiger", "Warren Weimann"),
    ("Yost, Watsica and Mann", 2, "Sophie Konopelski", "Janie Doyle"),
)

DEPARTMENT: tuple[tuple, ...] = (
    ("Sales", "Manchester", "Richard Roma"),
    ("Purchasing", "Manchester", "Naomi Lapaglia"),
    ("Production", "Leeds", "Chester Ming"),
    ("Dispatch", "Leds", "Mark Hanna"),
    ("Finance", "Manchester", "Jordan Belfort"),
    ("Facilities", "Manchester", "Shelley Levene"),
    ("Communications", "Leeds", "Ann Blake"),
    ("HR", "Leeds", "James Link"),
)

STAFF: tuple[tuple, ...] = (
    ("Jeremie", "Franey", 2, "jeremie.franey@terrifictotes.com"),
    ("Deron", "Beier", 6, "deron.beier@terrifictotes.com"),
    ("Jeanette", "Erdman", 6, "jeanette.erdman@terrifictotes.com"),
    ("Ana", "Glover", 3, "ana.glover@terrifictotes.com"),
    ("Magdalena", "Zieme", 8, "magdalena.zieme@terrifictotes.com"),
    ("Korey", "Kreiger", 3, "korey.kreiger@terrifictotes.com"),
    ("Raphael", "Rippin", 2, "raphael.rippin@terrifictotes.com"),
    ("Oswaldo", "Bergstrom", 7, "oswaldo.bergstrom@terrifictotes.com"),
    ("Brody", "Ratke", 2, "brody.ratke@terrifictotes.com"),
    ("Jazmyn", "Kuhn", 2, "jazmyn.kuhn@terrifictotes.com"),
    ("Meda", "Cremin", 5, "meda.cremin@terrifictotes.com"),
    ("Imani", "Walker", 5, "imani.walker@terrifictotes.com"),
    ("Stan", "Lehner", 4, "stan.lehner@terrifictotes.com"),
    ("Rigoberto", "VonRueden", 7, "rigoberto.vonrueden@terrifictotes.com"),
    ("Tom", "Gutkowski", 3, "tom.gutkowski@terrifictotes.com"),
    ("Jett", "Parisian", 6, "jett.parisian@terrifictotes.com"),
    ("Irving", "O'Keefe", 3, "irving.o'keefe@terrifictotes.com"),
    ("Tomasa", "Moore", 8, "tomasa.moore@terrifictotes.com"),
    ("Pierre", "Sauer", 2, "pierre.sauer@terrifictotes.com"),
    ("Flavio", "Kulas", 3, "flavio.kulas@terrifictotes.com"),
)

INITIAL_DESIGNS: tuple[tuple, ...] = (
    ("Wooden", "/lib", "wooden-20201128-jdvi.json"),
    ("Steel", "/etc/periodic", "steel-20210725-fcxq.json"),
    ("Steel", "/System", "steel-20210621-13gb.json"),
    ("Granite", "/usr/local/src", "granite-20220430-l5fs.json"),
    ("Granite", "/Network", "granite-20220419-b6n4.json"),
    ("Fresh", "/opt/sbin", "fresh-20220807-6ycu.json"),
    ("Wooden", "/System", "wooden-20211114-otpq.json"),
    ("Wooden", "/usr", "wooden-20220717-npgz.json"),
    ("Concrete", "/bin", "concrete-20211012-auw9.json"),
    ("Soft", "/usr/share", "soft-20220201-hzz1.json"),
)

CURRENCY: tuple[tuple, ...] = (("GBP",), ("USD",), ("EUR",))
PAYMENT_TYPE: tuple[tuple, ...] = tuple((name,) for name in ENUMS["PaymentTypeName"])
SALES_RECEIPT_ID = 1 + ENUMS["PaymentTypeName"].index("SALES_RECEIPT")
PURCHASE_PAYMENT_ID = 1 + ENUMS["PaymentTypeName"].index("PURCHASE_PAYMENT")

# Vocabularies of new designs and purchase orders (every value seen in the real data).
DESIGN_NAMES = (
    "Bronze",
    "Concrete",
    "Cotton",
    "Fresh",
    "Frozen",
    "Granite",
    "Metal",
    "Plastic",
    "Rubber",
    "Soft",
    "Steel",
    "Wooden",
)
FILE_LOCATIONS = (
    "/Applications",
    "/Library",
    "/Network",
    "/System",
    "/Users",
    "/bin",
    "/boot",
    "/boot/defaults",
    "/dev",
    "/etc",
    "/etc/defaults",
    "/etc/mail",
    "/etc/namedb",
    "/etc/periodic",
    "/etc/ppp",
    "/home",
    "/home/user",
    "/home/user/dir",
    "/lib",
    "/lost+found",
    "/media",
    "/mnt",
    "/net",
    "/opt",
    "/opt/bin",
    "/opt/include",
    "/opt/lib",
    "/opt/sbin",
    "/opt/share",
    "/private",
    "/private/tmp",
    "/private/var",
    "/proc",
    "/rescue",
    "/root",
    "/sbin",
    "/selinux",
    "/srv",
    "/sys",
    "/tmp",  # nosec B108 (a design.file_location value of the real data, not a path we write)
    "/usr",
    "/usr/X11R6",
    "/usr/bin",
    "/usr/include",
    "/usr/lib",
    "/usr/libdata",
    "/usr/libexec",
    "/usr/local/bin",
    "/usr/local/src",
    "/usr/obj",
    "/usr/ports",
    "/usr/sbin",
    "/usr/share",
    "/usr/src",
    "/var",
    "/var/log",
    "/var/mail",
    "/var/spool",
    "/var/tmp",  # nosec B108 (a design.file_location value of the real data)
    "/var/yp",
)
ITEM_CODE_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
FILE_SUFFIX_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"

# table -> (rows, delay after the seed start); counterparty and staff came 1.6 s after the rest.
_SEED_ROWS: dict[str, tuple[tuple[tuple, ...], int]] = {
    "address": (ADDRESS, 0),
    "counterparty": (COUNTERPARTY, STAFF_SEED_DELAY_MS),
    "currency": (CURRENCY, 0),
    "department": (DEPARTMENT, 0),
    "design": (INITIAL_DESIGNS, 0),
    "payment_type": (PAYMENT_TYPE, 0),
    "staff": (STAFF, STAFF_SEED_DELAY_MS),
}


def seed_frames(start_ms: int) -> dict[str, pl.DataFrame]:
    """The initial rows of every seeded table, ids 1..N, created (and last updated) at the start."""
    frames: dict[str, pl.DataFrame] = {}
    for table, (rows, delay_ms) in _SEED_ROWS.items():
        spec = SOURCE_TABLES[table]
        value_cols = [
            c for c in spec.column_names if c not in (spec.primary_key, "created_at", "last_updated")
        ]
        stamp = pl.lit(start_ms + delay_ms, dtype=pl.Int64).cast(TIMESTAMP_DTYPE)
        frame = pl.DataFrame(rows, schema=value_cols, orient="row", infer_schema_length=None)
        frames[table] = frame.with_columns(
            pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(spec.primary_key),
            stamp.alias("created_at"),
            stamp.alias("last_updated"),
        ).select(spec.column_names)
    return frames
