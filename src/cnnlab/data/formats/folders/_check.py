"""`cnnlab data check folders` and `cnnlab new`: survey a users' image/mask folders, collecting every problem."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.data.formats.common import read_image
from cnnlab.data.formats.folders import _groups as fgr
from cnnlab.data.formats.folders import _masks as fm
from cnnlab.data.formats.folders import _names as fnm
from cnnlab.data.formats.folders._fit import default_size, header, read_input
from cnnlab.data.formats.folders._layout import (
    GREY_MODES,
    Layout,
    Options,
    encoding_for,
    parse_options,
    scan_layout,
    summarize_sizes,
)
from cnnlab.errors import CnnlabError


@dataclass
class Survey:
    """What a data set holds; problems would stop training, warnings would not."""

    opts: Options
    layout: Layout
    encoding: fm.Encoding | None
    sizes: list[tuple[int, int]]    # (H, W) of every paired image
    channels: int
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    names_file: Path | None = None                        # class names read from this file (_names) ...
    names_options: dict = field(default_factory=dict)     # ... as reader options: classes or colors, and void
    sequence: tuple[float, float] | None = None           # one sequence under a random split: one_sequence

    def shares(self) -> list[float]:
        """Pixel share of each class (inside the field of view when one is given)."""
        counts = np.array(self.encoding.pixel_counts if self.encoding else [], dtype=np.float64)
        return (counts / max(counts.sum(), 1)).tolist()


def _pair_problems(layout: Layout, need_fov: bool, decode: bool) -> tuple[list[str], list[tuple[int, int]], int]:
    """Unreadable files, size mismatches and missing FOV files, for every pair (not only the first).

    The channel count comes from the images whose header could be read: one unreadable file must not turn a
    folder of colour photographs into "grey" (the default when nothing is known).
    """
    problems, sizes, modes = [], [], []
    for p in layout.all_pairs():
        try:
            h, w, mode = header(p.image)
            sizes.append((h, w))
            modes.append(mode)
            if decode:  # a truncated file passes the header read but not the decode
                read_input(p.image, 1)
                read_image(p.mask)
            for other, what in ((p.mask, "mask"), (p.fov, "field of view")):
                if other is None:
                    continue
                oh, ow, _ = header(other)
                if (oh, ow) != (h, w):
                    problems.append(f"{other}: {what} is {ow}x{oh} but its image {p.image.name} is {w}x{h}")
        except CnnlabError as e:
            problems.append(e.message)
        if need_fov and p.fov is None:
            problems.append(f"{p.image}: no field-of-view file matches this image")
    channels = 1 if all(m in GREY_MODES for m in modes) else 3
    return problems, sizes, channels


def _warnings(layout: Layout) -> list[str]:
    """Unmatched and ambiguous names, skipped files: training still works, but the user should know."""
    out = list(layout.notes)
    for g in layout.groups:
        at = f"{g.label}: " if g.label else ""
        for m, what in ((g.mask_match, "mask"), (g.fov_match, "field-of-view file")):
            if m is None:
                continue
            if m.unmatched_images:
                out.append(f"{at}{len(m.unmatched_images)} image(s) without a {what}: {', '.join(m.unmatched_images)}")
            if m.unmatched_partners:
                out.append(f"{at}{len(m.unmatched_partners)} {what}(s) without an image: "
                           f"{', '.join(m.unmatched_partners)}")
            if m.ambiguous:
                out.append(f"{at}ambiguous {what} names (several files fit one image): {', '.join(m.ambiguous)}")
    return out


def survey(root: Path, decode: bool = True, **options) -> Survey:
    """Scan, pair, discover the encoding and read every header; problems are collected, not raised one by one."""
    opts = parse_options(options)
    layout = scan_layout(Path(root), opts)  # missing folders and no pairs at all stop here, naming the folder
    problems, sizes, channels = _pair_problems(layout, bool(opts.fov), decode)
    enc = None
    if not problems:
        try:
            enc = encoding_for(layout, opts)
        except CnnlabError as e:
            problems.append(e.line())
    sequence = one_sequence(layout)
    warnings = _warnings(layout) + ([sequence_warning(*sequence)] if sequence else _group_warnings(layout, opts))
    names_file, names_options = None, {}
    if enc is not None and opts.classes is None and opts.colors is None:
        enc, names_file, names_options = _named(layout, opts, enc, warnings)
    if enc is not None:
        empty = [n for n, c in zip(enc.class_names, enc.pixel_counts) if c == 0]
        if empty:
            warnings.append(f"class(es) {', '.join(empty)} have no pixels in any mask: nothing can be learnt or "
                            "scored for them (check the mask encoding above, or data.options.classes / colors)")
    return Survey(opts, layout, enc, sizes, channels, problems, warnings, names_file, names_options, sequence)


def _named(layout: Layout, opts: Options, enc: fm.Encoding, warnings: list[str]
           ) -> tuple[fm.Encoding, Path | None, dict]:
    """The encoding with the class names of a names file beside the masks (_names), where one names these
    masks; the file and the reader options it amounts to."""
    path = fnm.find_names_file([g.masks.folder for g in layout.groups])
    names = fnm.read_names(path) if path else None
    if names is None:
        return enc, None, {}
    found = fnm.apply(names, enc.kind, enc.values)
    if not found:
        warnings.append(f"{path} does not name these masks' values {list(enc.values)[:12]}: its names are not used")
        return enc, None, {}
    if opts.void and "void" in found:
        found["void"] = list(dict.fromkeys([*opts.void, *found["void"]]))
    try:
        return encoding_for(layout, parse_options({**_as_options(opts), **found})), path, found
    except CnnlabError as e:
        warnings.append(f"{path}: its names were not used ({e.message})")
        return enc, None, {}


def _as_options(opts: Options) -> dict:
    """Options back as the reader's option mapping (only the keys set)."""
    return {k: v for k, v in opts.__dict__.items() if v is not None and v != ()}


def one_sequence(layout: Layout) -> tuple[float, float] | None:
    """(thumbnail distance between neighbours in name order, between images far apart) where a random split's
    pairs, carrying no name groups, are one sequence: neighbours near copies. None otherwise."""
    if layout.policy != "random" or any(g.images.nested for g in layout.groups):
        return None
    pairs = [p for g in layout.groups[:1] for p in g.pairs]
    names = [p.name for p in pairs]
    if fgr.find_groups(names) or len(names) < 8:
        return None
    half = len(names) // 2
    near, far, alike = fgr.neighbours_alike({"a": names[:half], "b": names[half:]}, {p.name: p.image for p in pairs})
    return (near, far) if alike else None


def sequence_warning(near: float, far: float) -> str:
    """What one_sequence found, and the split that keeps neighbours on one side."""
    return (f"neighbouring file names hold near-identical images (thumbnail distance {near:.2f} against {far:.2f} "
            "far apart in name order): frames of one video or slices of one stack? A random split puts neighbours "
            "on both sides of the test; split into blocks in name order (data.options.split: contiguous, which "
            "`cnnlab new` writes here) or give the data set's own splits")


def _group_warnings(layout: Layout, opts: Options) -> list[str]:
    """Name groups found (a sequence/video/patient/case prefix), and a warning where the random split still puts
    a group's near-identical neighbours on both sides of the test."""
    if layout.policy not in ("random", "given") or any(g.images.nested for g in layout.groups):
        return []
    groups = fgr.find_groups([p.name for g in layout.groups[:1] for p in g.pairs])
    if not groups or "do not look alike" in layout.policy_note:  # a shared prefix, not neighbours: said there
        return []
    out = [fgr.describe(groups)]
    by_group = "by name group" in layout.policy_note
    carved = layout.policy == "random" or len(layout.splits) > len(layout.groups)
    if carved and not by_group:
        why = "data.options.groups is false" if not opts.groups else "too few groups for every split"
        out.append(f"the random split is per image ({why}): frames/slices of one group land on both sides, so the "
                   "test scores memory of near-identical neighbours; split by group (data.options.groups: true) or "
                   "give the splits")
    return out


def _folder_line(role: str, files) -> str:
    extra = []
    if files.junk:
        extra.append(f"{files.junk} system file(s) skipped")
    if files.other:
        extra.append(f"{len(files.other)} non-image file(s) ignored: {', '.join(files.other[:5])}")
    if files.subdirs:
        extra.append(f"{len(files.subdirs)} sub-folder(s) not read")
    return f"  {role}: {files.folder} ({len(files.files)} files{'; ' + '; '.join(extra) if extra else ''})"


def check_report(root: Path, **options) -> str:
    """The human summary of `cnnlab data check folders`."""
    return survey_report(root, **options)[0]


def survey_report(root: Path, **options) -> tuple[str, list[str]]:
    """The human summary and the problems it lists (the command exits non-zero when there are any)."""
    s = survey(root, **options)
    lines = [f"folders data at {s.layout.root}"]
    for g in s.layout.groups:
        if g.label:
            lines.append(f" split folder '{g.label}':")
        lines += [_folder_line("images", g.images), _folder_line("masks", g.masks)]
        if g.fov:
            lines.append(_folder_line("fov", g.fov))
        rules = ", ".join(f"{r} ({c})" for r, c in g.mask_match.rules.most_common())
        lines.append(f"  pairs: {len(g.pairs)} matched by {rules}")
    lines.append(f"  split: {s.layout.policy_note}")
    if s.sizes:
        kinds = "colour (3 channels)" if s.channels == 3 else "grey (1 channel)"
        unread = len(s.layout.all_pairs()) - len(s.sizes)
        kinds += f" ({unread} unreadable image(s) not counted)" if unread else ""
        lines.append(f"  images: {kinds}; sizes (HxW): {summarize_sizes(s.sizes)}")
        lines.append(f"  size: {default_size(s.sizes)[1]} (set data.size to choose)")
    if s.encoding:
        where = " inside the field of view" if s.opts.fov else ""
        lines.append(f"  mask encoding: {s.encoding.describe()}")
        if s.names_file:
            lines.append(f"  class names from {s.names_file}")
        if s.encoding.void_values:
            share = s.encoding.void_pixels / max(s.encoding.void_pixels + sum(s.encoding.pixel_counts), 1)
            lines.append(f"  void (ignored in loss and metrics): {100 * share:.1f}% of pixels")
        lines.append(f"  classes (share of pixels{where}): " + ", ".join(
            f"{n} {100 * f:.1f}%" for n, f in zip(s.encoding.class_names, s.shares())))
    lines += [f"  note: {w}" for w in s.warnings]
    lines.append(f"  problems ({len(s.problems)}):" if s.problems else "  problems: none")
    lines += [f"    - {p}" for p in s.problems]
    return "\n".join(lines), s.problems
