"""Debian image recipes: the mirror from apt's configuration, the suite, the digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.errors import ImageError
from dockyard.images import debian
from dockyard.images.debian import AptSource, Recipe, apt_sources, debian_mirror, host_suite
from dockyard.images.debian_build import Workdir, installed_versions, trim


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_deb822_sources_give_uris_suites_and_components(tmp_path: Path) -> None:
    write(
        tmp_path / "d" / "debian.sources",
        "Types: deb deb-src\n"
        "# a comment\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main contrib\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "Enabled: no\n"
        "URIs: http://disabled.example/debian\n"
        "Suites: bookworm\n"
        "Components: main\n",
    )
    found = apt_sources(tmp_path / "none.list", tmp_path / "d")
    assert found == [
        AptSource(
            "http://mirror.example/debian", ("bookworm", "bookworm-updates"), ("main", "contrib")
        ),
        AptSource("http://mirror.example/debian-security", ("bookworm-security",), ("main",)),
    ]


def test_one_line_sources_with_options_and_comments(tmp_path: Path) -> None:
    listed = write(
        tmp_path / "sources.list",
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main  # note\n",
    )
    assert apt_sources(listed, tmp_path / "absent") == [
        AptSource("http://mirror.example/debian", ("bookworm",), ("main",))
    ]


def test_mirror_is_the_first_source_serving_the_suites_main(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(debian.MIRROR_ENV, raising=False)
    sources = [
        AptSource("http://security.example/", ("bookworm-security",), ("main",)),
        AptSource("http://contrib.example/", ("bookworm",), ("contrib",)),
        AptSource("http://mirror.example/debian", ("bookworm", "bookworm-updates"), ("main",)),
    ]
    assert debian_mirror("bookworm", sources) == "http://mirror.example/debian"
    with pytest.raises(ImageError, match=r"no Debian mirror for 'trixie'.*DOCKYARD_DEBIAN_MIRROR"):
        debian_mirror("trixie", sources)
    monkeypatch.setenv(debian.MIRROR_ENV, "http://chosen.example/debian")
    assert debian_mirror("trixie", sources) == "http://chosen.example/debian"


def test_the_default_suite_is_this_machines_release(tmp_path: Path) -> None:
    release = write(
        tmp_path / "os-release", 'ID=debian\nVERSION_CODENAME=bookworm\nNAME="Debian GNU/Linux"\n'
    )
    assert host_suite(release) == "bookworm"
    other = write(tmp_path / "other", "ID=fedora\nVERSION_CODENAME=\n")
    with pytest.raises(ImageError, match=r"not Debian.*debian\.suite"):
        host_suite(other)


def test_the_digest_names_what_is_installed_not_how_it_was_written() -> None:
    base = Recipe("bookworm", "amd64", ("bwa", "samtools"))
    assert base.digest == Recipe("bookworm", "amd64", ("samtools", "bwa", "bwa")).digest
    assert base.digest != Recipe("trixie", "amd64", ("bwa", "samtools")).digest
    assert base.digest != Recipe("bookworm", "arm64", ("bwa", "samtools")).digest
    assert base.digest != Recipe("bookworm", "amd64", ("bwa",)).digest


def test_trim_keeps_licences_and_drops_manuals_and_apt_lists(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    write(root / "usr/share/doc/bwa/copyright", "GPL-3")
    write(root / "usr/share/doc/bwa/changelog.Debian.gz", "x")
    write(root / "usr/share/doc/tiny/README", "x")
    write(root / "usr/share/man/man1/bwa.1.gz", "x")
    write(root / "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease", "x")
    write(root / "usr/bin/bwa", "binary")
    trim(root)
    kept = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert kept == ["usr/bin/bwa", "usr/share/doc/bwa/copyright"]
    assert (root / "usr/share/man").is_dir() and (root / "var/lib/apt/lists").is_dir()


def test_a_workdir_is_removed_afterwards(tmp_path: Path) -> None:
    with Workdir(tmp_path / "build") as work:
        write(work / "rootfs" / "etc" / "hostname", "x")
    assert list((tmp_path / "build").iterdir()) == []


def test_installed_versions_come_from_the_roots_dpkg_status(tmp_path: Path) -> None:
    write(
        tmp_path / "var/lib/dpkg/status",
        "Package: bwa\nStatus: install ok installed\nVersion: 0.7.17-7+b2\n"
        "Description: aligner\n long text: with a colon\n\n"
        "Package: samtools\nStatus: deinstall ok config-files\nVersion: 1.16.1-1\n\n"
        "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n",
    )
    assert installed_versions(tmp_path, ["samtools", "bwa"]) == {"bwa": "0.7.17-7+b2"}
