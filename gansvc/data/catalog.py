"""The catalog of `python -m gansvc.data get`: the public datasets of the founding reports and of the anchor results.

Each entry says what the data is, its layout once in gansvc, its size, its terms, which family and report use it,
how a download is verified, and whether a random horizontal flip suits it (`flip`, read by `data info` and by the
training presets). Downloadable entries have a `url`; the others (`manual`) need an account or a manual step, and
`data get NAME` prints where to get the files and the `data put` command to run afterwards.

Sources (checked with the project's search tool; anything not confirmed says "unverified" in `notes`):
- CycleGAN zips: the official repository's datasets/download_cyclegan_dataset.sh (junyanz/pytorch-CycleGAN-and-pix2pix)
  fetches `<host>/cyclegan/datasets/NAME.zip`; the host moved from people.eecs.berkeley.edu/~taesung_park/CycleGAN to
  efrosgans.eecs.berkeley.edu. Sizes are those of third-party listings of the same zips (approximate).
- CIFAR-10: https://www.cs.toronto.edu/~kriz/cifar.html lists the binary version, 162 MB, md5sum
  c32a1d4ab5d03f1284b67883e8d87530.
- cat2dog: DRIT's datasets/download_dataset.sh (HsinYingLee/DRIT) fetches http://vllab.ucmerced.edu/hylee/DRIT/datasets/
  cat2dog.zip.
- selfie2anime: the Google Drive file of U-GAT-IT's README (taki0112/UGATIT).
- GTA5: https://download.visinf.tu-darmstadt.de/data/from_games/ (10 parts of images + labels, Richter et al. 2016);
  Cityscapes: https://www.cityscapes-dataset.com/ (registration required).

`GANSVC_DATA_MIRROR=http://host/path/` replaces every downloadable entry's host: the archive is then fetched from
`<mirror>/<archive file name>` (an offline cluster's own copy; the tests' local server), verified the same way.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Literal

MIRROR_ENV = "GANSVC_DATA_MIRROR"
Kind = Literal["zip", "cifar10-binary", "manual"]
PINNED = "md5 pinned (publisher)"
RECORDED = "sha256 recorded at first download"
MANUAL = "manual step"


@dataclass(frozen=True)
class Entry:
    name: str
    what: str
    layout: str  # as gansvc stores it: "unpaired", "single + labels (class)", "unpaired + masks"
    size: str  # approximate download size
    licence: str
    families: tuple[str, ...]  # the gansvc families that train on it
    report: str  # the founding report / anchor result using it
    flip: bool  # whether a random horizontal flip is right for this data
    flip_why: str
    kind: Kind
    url: str = ""  # downloadable entries only
    md5: str = ""  # the publisher's checksum, when it gives one
    archive: str = ""  # the archive's file name (cache and mirror name)
    manual: str = ""  # manual entries: where to get the files, the layout, the conversion, the put command
    notes: str = ""  # what could not be confirmed, and other caveats
    aliases: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        """The main family (the first of `families`)."""
        return self.families[0] if self.families else ""

    @property
    def verification(self) -> str:
        if self.kind == "manual":
            return MANUAL + ("; --from: sha256 recorded" if self.archive else "")
        return PINNED if self.md5 else RECORDED

    def source_url(self, env: dict[str, str] | None = None) -> str:
        """The URL to fetch: the publisher's, or `$GANSVC_DATA_MIRROR/<archive>` when that is set."""
        mirror = (os.environ if env is None else env).get(MIRROR_ENV, "").strip()
        if mirror and self.kind != "manual":
            return mirror.rstrip("/") + "/" + self.archive
        return self.url


# ---------------------------------------------------------------------------------------------- the entries

_CYCLEGAN_HOST = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets"
_CYCLEGAN_TERMS = (
    "research use; images keep their owners' copyright (ImageNet / Flickr / WikiArt sources, Zhu et "
    "al. 2017); no explicit licence published (unverified)"
)


def _cyclegan(
    name: str,
    what: str,
    size: str,
    flip: bool,
    why: str,
    report: str = "CycleGAN (Zhu et al. 2017)",
    families: tuple[str, ...] = ("cyclegan", "ugatit"),
    notes: str = "",
) -> Entry:
    return Entry(
        name=name,
        what=what,
        layout="unpaired (trainA/ trainB/ testA/ testB/)",
        size=size,
        licence=_CYCLEGAN_TERMS,
        families=families,
        report=report,
        flip=flip,
        flip_why=why,
        kind="zip",
        url=f"{_CYCLEGAN_HOST}/{name}.zip",
        archive=f"{name}.zip",
        notes=notes,
    )


_R000 = "000 (CycleGAN optimisation) + CycleGAN paper"
_PHOTO = "photos of natural scenes have no handedness"

# Cityscapes labelId -> trainId (19 evaluated classes; every other id is ignored), from cityscapesScripts'
# helpers/labels.py: the table every Cityscapes / GTA5 -> Cityscapes result uses. GTA5's label PNGs use the same ids.
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

_GTA2CS_MANUAL = f"""\
GTA5 -> Cityscapes (report 001, semantic-cyclegan): an unpaired dataset with segmentation masks on both sides.
1. GTA5 (Richter et al. 2016, 24,966 frames, about 57 GB in 10 parts): download 01_images.zip ... 10_images.zip and
   01_labels.zip ... 10_labels.zip from https://download.visinf.tu-darmstadt.de/data/from_games/ (no account).
2. Cityscapes (Cordts et al. 2016): register at https://www.cityscapes-dataset.com/ and download
   leftImg8bit_trainvaltest.zip (11 GB) and gtFine_trainvaltest.zip (241 MB).
3. Build one folder (the layout `data put` reads; a mask is one PNG of class indices per image, same file name):
     trainA/  GTA5 images/*.png (parts 01-09)         trainA_masks/  GTA5 labels/*.png, converted (below)
     testA/   GTA5 images of part 10 (held out)       testA_masks/   their labels, converted
     trainB/  Cityscapes leftImg8bit/train/*/*.png    trainB_masks/  gtFine/train/*/*_gtFine_labelIds.png, converted
                                                                     and renamed to their image's name
     testB/   Cityscapes leftImg8bit/val/*/*.png      testB_masks/   gtFine/val, the same (results are on val)
     classes.txt  the 19 class names, one a line, in this order: {", ".join(CITYSCAPES_CLASSES)}
   Conversion of every label PNG (GTA5 and gtFine labelIds alike): labelId -> trainId by cityscapesScripts' table
   (7 road -> 0, 8 sidewalk -> 1, ... 33 bicycle -> 18), every other value -> 255 (ignored); gtFine masks are renamed
   x_gtFine_labelIds.png -> x_leftImg8bit.png. One command does it per folder, e.g.:
     python -m gansvc.data cityscapes-masks gtFine/train DATASET/trainB_masks --classes DATASET/classes.txt
     python -m gansvc.data cityscapes-masks GTA5/labels DATASET/trainA_masks
   GTA5 label PNGs are palette images whose indices are these labelIds; a few GTA5 frames differ in size from
   their label: put skips those (listed in the manifest).
   Report 001 trains at 1024x1024 (bilinear resize) with random flips and crops.
4. Then run the put command below."""

_ENTRIES: tuple[Entry, ...] = (
    _cyclegan(
        "horse2zebra",
        "horses <-> zebras (ImageNet photos), 1,067 + 1,334 train, 120 + 140 test, 256x256",
        "111 MB",
        True,
        f"{_PHOTO}; the CycleGAN paper trains it with flips",
        report=_R000,
    ),
    _cyclegan("apple2orange", "apples <-> oranges (ImageNet photos), 256x256", "75 MB", True, _PHOTO, report=_R000),
    _cyclegan(
        "summer2winter_yosemite",
        "Yosemite in summer <-> winter (Flickr), 256x256",
        "126 MB",
        True,
        _PHOTO,
        report=_R000,
    ),
    _cyclegan(
        "iphone2dslr_flower", "iPhone <-> DSLR flower photos (Flickr), 256x256", "324 MB", True, _PHOTO, report=_R000
    ),
    _cyclegan(
        "monet2photo",
        "Monet paintings <-> landscape photos, 256x256",
        "291 MB",
        True,
        "paintings and landscapes read the same mirrored",
    ),
    _cyclegan(
        "vangogh2photo",
        "Van Gogh paintings <-> landscape photos, 256x256",
        "292 MB",
        True,
        "paintings and landscapes read the same mirrored",
    ),
    _cyclegan(
        "cezanne2photo",
        "Cezanne paintings <-> landscape photos, 256x256",
        "267 MB",
        True,
        "paintings and landscapes read the same mirrored",
    ),
    _cyclegan(
        "ukiyoe2photo",
        "Ukiyo-e prints <-> landscape photos, 256x256",
        "279 MB",
        True,
        "prints and landscapes read the same mirrored (printed captions are rare)",
    ),
    _cyclegan(
        "facades",
        "CMP facade label maps <-> photos, 400 pairs (trained unpaired), 256x256",
        "34 MB",
        True,
        "facades are close to left-right symmetric",
    ),
    _cyclegan(
        "maps",
        "Google Maps <-> aerial photos, 1,096 train, 256x256",
        "1.4 GB (unverified)",
        False,
        "map labels and street names are text: a mirrored map is not a map",
        notes="the size is a third-party figure (unverified)",
    ),
    _cyclegan(
        "cityscapes",
        "Cityscapes semantic label maps <-> photos (CycleGAN's 256x256 version, 2,975 train)",
        "58 MB (unverified)",
        False,
        "countries drive on one side: mirrored street scenes change traffic direction and sign text",
        families=("cyclegan", "semantic-cyclegan"),
        notes="CycleGAN's label<->photo version, not the full Cityscapes (see gta2cityscapes)",
    ),
    Entry(
        name="cifar10",
        what="CIFAR-10: 60,000 32x32 colour images in 10 classes (50,000 train, 10,000 test)",
        layout="single + labels (class: the 10 class names)",
        size="162 MB",
        licence="free to use; cite Krizhevsky 2009 (the CIFAR page asks for the tech report citation)",
        families=("dcgan", "wgan-gp", "acgan", "wacgan", "wgan"),
        report="anchor: StudioGAN CIFAR-10 table (DCGAN 49.03, WGAN-GP 25.85, ACGAN 45.57 FID)",
        flip=True,
        flip_why="objects (planes, cars, animals) have no handedness; StudioGAN trains CIFAR-10 with flips",
        kind="cifar10-binary",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        md5="c32a1d4ab5d03f1284b67883e8d87530",
        archive="cifar-10-binary.tar.gz",
        notes="parsed from the binary records (never unpickled)",
    ),
    Entry(
        name="cat2dog",
        what="cats <-> dogs (Asirra photos as prepared by DRIT): 771 + 1,264 train, 100 + 100 test",
        layout="unpaired (trainA/ trainB/ testA/ testB/)",
        size="about 50 MB (unverified)",
        licence="research use; Asirra / Petfinder images (Microsoft Research); no explicit licence (unverified)",
        families=("ugatit", "cyclegan"),
        report="000 (cat2dog, geometric changes)",
        flip=True,
        flip_why="animal photos have no handedness",
        kind="zip",
        url="http://vllab.ucmerced.edu/hylee/DRIT/datasets/cat2dog.zip",
        archive="cat2dog.zip",
        notes="counts and size unverified; the DRIT host may be offline: then get the zip elsewhere and pass "
        "--from FILE",
    ),
    Entry(
        name="selfie2anime",
        what="selfies <-> anime faces (U-GAT-IT): 3,400 + 3,400 train, 100 + 100 test, 256x256",
        layout="unpaired (trainA/ selfies, trainB/ anime; testA/ testB/)",
        size="about 400 MB (unverified)",
        licence="research use (U-GAT-IT authors); no explicit licence (unverified)",
        families=("ugatit",),
        report="000 (selfie2anime) + U-GAT-IT (KID x 100 = 11.61)",
        flip=True,
        archive="selfie2anime.zip",
        flip_why="faces are close to symmetric; U-GAT-IT trains with random flips",
        kind="manual",
        manual="""\
selfie2anime (U-GAT-IT, Kim et al. 2020): the zip is a Google Drive file, which needs a browser or gdown.
1. Download https://drive.google.com/file/d/1xOWj1UVgp6NKMT3HbPhBbtq2A4EDkghF/view (the link of the official
   README, github.com/taki0112/UGATIT), or with `pip install gdown; gdown 1xOWj1UVgp6NKMT3HbPhBbtq2A4EDkghF`.
2. It unpacks to selfie2anime/trainA (selfies) trainB (anime) testA testB: the unpaired layout as it is, so the
   zip itself can be put (no conversion).""",
        notes="the count per domain is the U-GAT-IT paper's (unverified here)",
    ),
    Entry(
        name="anime-faces",
        what="anime faces from getchu.com, 21,551 images cropped with lbpcascade_animeface, "
        "64x64 (Kaggle: soumikrakshit/anime-faces)",
        layout="single (train/)",
        size="about 400 MB (unverified)",
        licence="Kaggle dataset; images belong to their artists (getchu.com); research use (unverified)",
        families=("dcgan",),
        report="002 (anime-face DCGAN)",
        flip=True,
        flip_why="faces are close to symmetric; flipping doubles the data",
        kind="manual",
        manual="""\
Anime faces of report 002 (Kaggle: https://www.kaggle.com/datasets/soumikrakshit/anime-faces): Kaggle needs an
account (and accepting its terms), so download it yourself:
1. In a browser, or with the Kaggle CLI (`pip install kaggle`, API token in ~/.kaggle/kaggle.json):
     kaggle datasets download -d soumikrakshit/anime-faces
2. The archive holds the images in one folder (data/ or similar): images at the root of a folder are taken as the
   train split, so put the unpacked folder (or the zip) as it is; no labels, no conversion.""",
        notes="folder name inside the archive unverified",
    ),
    Entry(
        name="anime-faces-tags",
        what="anime faces with hair / eye colour tags, 96x96 (NTU MLDS 2018 HW3: "
        "33,431 faces + tags.csv; reports 003/004)",
        layout="single + labels (hair_color, eye_color)",
        size="about 200 MB (unverified)",
        licence="course data (NTU MLDS 2018) from public anime sites; research use (unverified)",
        families=("wgan", "wgan-gp", "acgan", "wacgan"),
        report="003 (ACGAN / WACGAN hair+eye tags) and 004 (WGAN / WGAN-GP)",
        flip=True,
        flip_why="faces are close to symmetric; hair / eye colours do not change when mirrored",
        kind="manual",
        manual="""\
Anime faces with tags (reports 003 and 004: the NTU MLDS 2018 HW3 data, 96x96, image archive + tag archive,
linked from Google Drive in the course's homework page; report 003 labels its faces with hair and eye colour):
1. Download the faces archive and its tags file (the course's Google Drive links; or the Kaggle mirror of the same
   data) by hand.
2. Make a folder: train/<id>.jpg for each face, and labels.csv with the header `file,hair_color,eye_color` and one
   row per image, e.g. `train/0.jpg,blonde,blue`, from the tag file's "<hair> hair <eye> eyes" strings. Faces
   without both tags: leave them out (acgan/wacgan need a label for every training image), or put them unlabelled
   in a separate dataset for dcgan/wgan.""",
        notes="download links and the tag format unverified (Google Drive; Kaggle mirrors exist)",
    ),
    Entry(
        name="anime-face-dataset",
        what="63,632 anime faces, 90x90 to 120x120 (Mckinsey666/Anime-Face-Dataset; Kaggle: splcher/animefacedataset)",
        layout="single (train/)",
        size="about 400 MB (unverified)",
        licence="scraped from getchu.com; research use (unverified)",
        families=("dcgan", "wgan-gp"),
        report="003 (the larger anime-face set of its data-size comparison)",
        flip=True,
        flip_why="faces are close to symmetric",
        kind="manual",
        manual="""\
Anime Face Dataset (Kaggle: https://www.kaggle.com/datasets/splcher/animefacedataset; also linked from
github.com/bchao1/Anime-Face-Dataset): Kaggle needs an account.
1. kaggle datasets download -d splcher/animefacedataset   (or the browser)
2. The archive holds images/*.jpg: put the zip (or the unpacked folder) as it is; images are taken as train/.""",
        notes="sizes and counts from the dataset page (unverified here)",
    ),
    Entry(
        name="gta2cityscapes",
        what="GTA5 game frames (24,966) -> Cityscapes street photos (2,975 train / 500 "
        "val), both with pixel labels (19 classes)",
        layout="unpaired + masks (trainA/ trainA_masks/ ... classes.txt)",
        size="about 57 GB (GTA5) + 11 GB (Cityscapes)",
        licence="GTA5: research use (Richter et al. 2016); Cityscapes: registration and its non-commercial licence",
        families=("semantic-cyclegan", "segmenter"),
        report="001 (semantic consistency, GTA5 -> Cityscapes)",
        flip=True,
        flip_why="report 001 trains with random horizontal flips (masks flip with their images)",
        kind="manual",
        manual=_GTA2CS_MANUAL,
        aliases=("gta5", "gta5-cityscapes", "cityscapes-full"),
        notes="Cityscapes needs an account; flip follows report 001 although traffic drives on one side",
    ),
)

CATALOG: dict[str, Entry] = {e.name: e for e in _ENTRIES}
_ALIASES: dict[str, str] = {a: e.name for e in _ENTRIES for a in e.aliases}


class UnknownDataset(ValueError):
    """A name that is not in the catalog; the message lists the close names."""


def names() -> list[str]:
    return list(CATALOG)


def entry(name: str) -> Entry:
    """The entry called `name` (or one of its aliases); UnknownDataset naming the close names otherwise."""
    key = name.strip().lower()
    if key in CATALOG:
        return CATALOG[key]
    if key in _ALIASES:
        return CATALOG[_ALIASES[key]]
    close = difflib.get_close_matches(key, [*CATALOG, *_ALIASES], n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownDataset(
        f"no dataset {name!r} in the catalog: {hint}`python -m gansvc.data get --list` lists them "
        f"({', '.join(CATALOG)}). For other data, use `python -m gansvc.data put SRC DEST`"
    )


def find(name: str | None) -> Entry | None:
    """`entry(name)`, or None for None / an unknown name."""
    if not name:
        return None
    try:
        return entry(name)
    except UnknownDataset:
        return None


def get_command(name: str) -> str:
    """The exact command line that fetches `name` into the default storage."""
    return f"python -m gansvc.data get {entry(name).name}"


FLIP_RULE = (
    "a random horizontal flip is right for data without handedness (faces, animals, objects, landscapes: "
    "horse2zebra, CIFAR-10) and wrong for characters, text, maps, or anything that mirrored is another "
    "thing; set it with --set data.flip=true / --set data.flip=false"
)


def flip_advice(name: str | None) -> str:
    """One line on the horizontal-flip augmentation for the catalog dataset `name` (the general rule otherwise)."""
    e = find(name)
    if e is None:
        return "augmentation: " + FLIP_RULE
    if e.flip:
        return (
            f"augmentation: {e.name}: a random horizontal flip is right ({e.flip_why}): keep data.flip=true "
            "(the default); turn it off with --set data.flip=false"
        )
    return (
        f"augmentation: {e.name}: a horizontal flip is wrong ({e.flip_why}): train with --set data.flip=false "
        "(data.flip defaults to true)"
    )


SOURCE_PREFIX = "catalog:"


def source_id(name: str, sha256: str) -> str:
    """What a catalog dataset's manifest records as its source: the catalog name and the archive's SHA-256."""
    return f"{SOURCE_PREFIX}{name}:sha256={sha256}"


def name_of_source(source: str) -> str | None:
    """The catalog name in a manifest's `source` (written by `data get`), or None."""
    if not source.startswith(SOURCE_PREFIX):
        return None
    return source[len(SOURCE_PREFIX) :].split(":", 1)[0] or None
