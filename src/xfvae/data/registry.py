"""The data sets this project knows by name: where each comes from, how to check and parse it.

Hashes. sha256 of the MovieLens 100K/1M/20M zips are the ones tensorflow_datasets pins
(``tensorflow_datasets/url_checksums/movielens.txt``); the md5 sums are GroupLens' own
(``<zip>.md5`` beside each zip). No trustworthy sha256 is published for ml-10m or the Amazon files:
there ``sha256=None`` and the download layer trusts the first download (checking the md5 where one
is published), records its sha256 in ``<file>.sha256`` and verifies every later use against it.

Amazon column order. The 2014 ratings-only files are ``user,item,rating,timestamp``; the 2018 ones
are ``item,user,rating,timestamp`` as the authors' page documents (LensKit's Amazon loader reads
them in that order too). Column order is a field of the spec, so it cannot be mixed up.

Filters. Paper 4.1 keeps Amazon users and items with at least 10 ratings; it does not say whether
once or until a fixed point. We iterate to a fixed point (a 10-core) by default, so the stated
property holds in the data used; ``filter_iterate=False`` applies the rule once.
"""

from __future__ import annotations

from dataclasses import dataclass

RATING_COLUMNS = ("user", "item", "rating", "timestamp")
AMAZON_2014_COLUMNS = ("user", "item", "rating", "timestamp")
AMAZON_2018_COLUMNS = ("item", "user", "rating", "timestamp")


@dataclass(frozen=True)
class PaperCounts:
    """A row of the paper's Table 1 (after its filters)."""

    users: int
    items: int
    ratings: int


@dataclass(frozen=True)
class Fallback:
    """A second source of the same ratings, read from a file inside a PyPI wheel."""

    requirement: str  # what `pip download` fetches, e.g. "recbole==1.2.1"
    member: str  # path of the ratings file inside the wheel
    sha256: str  # of that member's bytes
    filename: str  # stored as data_dir/<name>/<filename>
    format: str  # key of xfvae.data.parsers.FORMATS


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    urls: tuple[str, ...] = ()  # official first, then mirrors
    filename: str | None = None  # the downloaded file, cached as data_dir/<name>/<filename>
    sha256: str | None = None  # None: trust on first use (see module docstring)
    md5: str | None = None  # published by the provider; checked when present
    member: str | None = None  # ratings file inside the archive
    format: str | None = None  # key of xfvae.data.parsers.FORMATS
    columns: tuple[str, ...] = RATING_COLUMNS  # order of the fields in the file
    rating_min: float = 1.0
    rating_max: float = 5.0
    min_user_ratings: int = 0
    min_item_ratings: int = 0
    filter_iterate: bool = True
    duplicates: str = "error"  # error | first | last | mean
    version: str | None = None
    paper: PaperCounts | None = None
    fallback: Fallback | None = None


_ML = "https://files.grouplens.org/datasets/movielens"
_AMAZON_2014 = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
_AMAZON_2018 = "https://jmcauley.ucsd.edu/data/amazon_v2/categoryFilesSmall"
_AMAZON_2018_MIRROR = (
    "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/categoryFilesSmall"
)

#: The ML-100K ratings as shipped in RecBole's wheel: same rows, same order as u.data.
RECBOLE_ML100K = Fallback(
    requirement="recbole==1.2.1",
    member="recbole/dataset_example/ml-100k/ml-100k.inter",
    sha256="4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    filename="ml-100k.inter",
    format="recbole-inter",
)


def _amazon(name: str, category: str, paper: PaperCounts, version: str) -> DatasetSpec:
    if version == "2014":
        urls, filename, columns = (
            (f"{_AMAZON_2014}/ratings_{category}.csv",),
            f"ratings_{category}.csv",
            AMAZON_2014_COLUMNS,
        )
    else:
        urls, filename, columns = (
            (f"{_AMAZON_2018}/{category}.csv", f"{_AMAZON_2018_MIRROR}/{category}.csv"),
            f"{category}.csv",
            AMAZON_2018_COLUMNS,
        )
    return DatasetSpec(
        name=name,
        urls=urls,
        filename=filename,
        format="amazon-csv",
        columns=columns,
        min_user_ratings=10,  # paper 4.1
        min_item_ratings=10,
        version=version,
        paper=paper,
    )


_PET = PaperCounts(46_403, 61_673, 1_008_336)
_KINDLE = PaperCounts(92_351, 55_924, 1_619_155)

_SPECS: dict[tuple[str, str | None], DatasetSpec] = {
    ("ml-100k", None): DatasetSpec(
        name="ml-100k",
        urls=(f"{_ML}/ml-100k.zip",),
        filename="ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        md5="0e33842e24a9c977be4e0107933c0723",
        member="ml-100k/u.data",
        format="ml-100k-data",
        fallback=RECBOLE_ML100K,
    ),
    ("ml-1m", None): DatasetSpec(
        name="ml-1m",
        urls=(f"{_ML}/ml-1m.zip",),
        filename="ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        md5="c4d9eecfca2ab87c1945afe126590906",
        member="ml-1m/ratings.dat",
        format="ml-dat",
        paper=PaperCounts(6_040, 3_900, 1_000_209),
    ),
    ("ml-10m", None): DatasetSpec(
        name="ml-10m",
        urls=(f"{_ML}/ml-10m.zip",),
        filename="ml-10m.zip",
        md5="ce571fd55effeba0271552578f2648bd",
        member="ml-10M100K/ratings.dat",
        format="ml-dat",
        rating_min=0.5,
        paper=PaperCounts(69_878, 10_631, 9_999_989),
    ),
    ("ml-20m", None): DatasetSpec(
        name="ml-20m",
        urls=(f"{_ML}/ml-20m.zip",),
        filename="ml-20m.zip",
        sha256="96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        md5="cd245b17a1ae2cc31bb14903e1204af3",
        member="ml-20m/ratings.csv",
        format="ml-20m-csv",
        rating_min=0.5,
        paper=PaperCounts(135_543, 21_651, 19_972_967),
    ),
    ("amazon-pet", "2014"): _amazon("amazon-pet", "Pet_Supplies", _PET, "2014"),
    ("amazon-pet", "2018"): _amazon("amazon-pet", "Pet_Supplies", _PET, "2018"),
    ("amazon-kindle", "2014"): _amazon("amazon-kindle", "Kindle_Store", _KINDLE, "2014"),
    ("amazon-kindle", "2018"): _amazon("amazon-kindle", "Kindle_Store", _KINDLE, "2018"),
    # Generated in memory (xfvae.data.synthetic); the scale is make_synthetic's default.
    ("synthetic", None): DatasetSpec(name="synthetic"),
    # A user-supplied split (xfvae.data.loading.load_csv_split): header user,item,rating[,timestamp].
    ("csv", None): DatasetSpec(name="csv", format="csv"),
}
_DEFAULT_VERSION = {"amazon-pet": "2014", "amazon-kindle": "2014"}

NAMES: tuple[str, ...] = tuple(dict.fromkeys(name for name, _ in _SPECS))


def get_spec(name: str, version: str | int | None = None) -> DatasetSpec:
    """The spec of data set ``name`` (``version`` picks the Amazon dump: "2014" or "2018")."""
    if name not in NAMES:
        raise KeyError(f"unknown data set {name!r}; known data sets: {', '.join(NAMES)}")
    version = _DEFAULT_VERSION.get(name) if version is None else str(version)
    if (name, version) not in _SPECS:
        known = sorted(str(v) for n, v in _SPECS if n == name and v is not None) or ["(none)"]
        raise KeyError(
            f"data set {name!r} has no version {version!r}; known versions: {', '.join(known)}"
        )
    return _SPECS[(name, version)]
