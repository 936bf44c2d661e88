"""Names, places and attribute values of the demo store's customers. Emails use example domains only."""

from __future__ import annotations

FIRST_NAMES_EN = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Oliver", "Sophia", "Elijah", "Isabella", "James", "Mia", "William",
    "Amelia", "Benjamin", "Harper", "Lucas", "Evelyn", "Henry", "Abigail", "Alexander", "Emily", "Jack", "Ella",
    "Daniel", "Grace", "Samuel", "Chloe", "Leon", "Hannah", "Lukas", "Camille", "Hugo", "Lea", "Finn", "Sofia",
    "Mateo", "Aisha", "Omar", "Priya", "Ravi",
)  # fmt: skip
LAST_NAMES_EN = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White", "Harris",
    "Clark", "Lewis", "Walker", "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Müller",
    "Schmidt", "Dubois", "Bernard", "O'Brien", "Murphy", "de Vries", "Jansen", "Patel", "Khan",
)  # fmt: skip
# (characters, pinyin) pairs: the email uses the pinyin.
SURNAMES_ZH = (
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"), ("杨", "yang"), ("黄", "huang"),
    ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"), ("徐", "xu"), ("孙", "sun"), ("马", "ma"), ("朱", "zhu"),
    ("胡", "hu"), ("郭", "guo"), ("何", "he"), ("林", "lin"), ("罗", "luo"), ("高", "gao"),
)  # fmt: skip
GIVEN_NAMES_ZH = (
    ("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("秀英", "xiuying"), ("敏", "min"), ("静", "jing"), ("丽", "li"),
    ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"), ("勇", "yong"), ("艳", "yan"), ("杰", "jie"),
    ("娟", "juan"), ("涛", "tao"), ("明", "ming"), ("超", "chao"), ("秀兰", "xiulan"), ("霞", "xia"),
    ("平", "ping"), ("刚", "gang"), ("桂英", "guiying"), ("晓东", "xiaodong"), ("子涵", "zihan"), ("雨桐", "yutong"),
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")

COUNTRIES = {
    "en": (("US", 0.45), ("GB", 0.18), ("CA", 0.1), ("AU", 0.08), ("DE", 0.08), ("FR", 0.05), ("IE", 0.03),
           ("NL", 0.03)),
    "zh": (("CN", 0.7), ("SG", 0.2), ("TW", 0.1)),
}  # fmt: skip
LANGUAGE_WEIGHTS = {"en": 3.0, "zh": 1.0}

CATEGORIES = ("electronics", "fashion", "home", "beauty", "sports", "books", "toys", "grocery")
CATEGORY_WEIGHTS = (0.2, 0.22, 0.16, 0.12, 0.1, 0.08, 0.06, 0.06)
DEVICES = ("ios", "android", "desktop", "mobile_web")
DEVICE_WEIGHTS = {"en": (0.35, 0.25, 0.3, 0.1), "zh": (0.3, 0.5, 0.1, 0.1)}
ACQUISITION_CHANNELS = ("organic", "paid_search", "social", "referral", "affiliate")
ACQUISITION_WEIGHTS = (0.35, 0.25, 0.2, 0.12, 0.08)
LOYALTY_TIERS = ("bronze", "silver", "gold", "platinum")
AGENT_NAMES = {"en": ("Sam", "Alex", "Jordan", "Taylor", "Morgan"), "zh": ("小王", "小李", "小张", "小陈")}
