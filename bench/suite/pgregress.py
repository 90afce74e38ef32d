"""PostgreSQL's own regression suite (src/test/regress) for the installed server, and the
pieces it needs beside it: regress.so, built from the suite's regress.c, and the spi
modules autoinc.so and refint.so that the server package ships.

The suite comes from Debian's source package of the installed server version, fetched
once into a cache folder with apt-get and a private source list, so the system's apt
configuration is not touched. The server headers come from postgresql-server-dev-N,
installed with apt-get at the server's own version when they are missing."""

import glob
import os
import shutil
import subprocess
import tarfile
import tempfile

APT_SOURCES = """Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# The parts of src/test/regress a run reads.
SUITE_PARTS = ("sql", "expected", "data", "parallel_schedule", "resultmap", "regress.c")


def cache_root():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "pgfleet", "regress")


def major_of(bindir):
    """15 for /usr/lib/postgresql/15/bin, else from `postgres --version`."""
    out = subprocess.run([os.path.join(bindir, "postgres"), "--version"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[2].split(".")[0]


def pg_regress_path(bindir):
    """pg_regress of the installed version (Debian: postgresql-client-N ships it)."""
    pgxs = subprocess.run([os.path.join(bindir, "pg_config"), "--pgxs"],
                          capture_output=True, text=True).stdout.strip()
    candidates = [os.path.join(os.path.dirname(os.path.dirname(pgxs)),
                               "test", "regress", "pg_regress")] if pgxs else []
    candidates.append(os.path.join(os.path.dirname(bindir), "lib", "pgxs", "src", "test",
                                   "regress", "pg_regress"))
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    raise RuntimeError("pg_regress not found (Debian: it comes with postgresql-client-N)")


def installed_version(package):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def apt_install(packages, log):
    """apt-get install, with an `apt-get update` first when the lists are too old to
    know the packages (fresh containers have none)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    argv = ["apt-get", "install", "-y", "-qq", *packages]
    log(f"apt-get install {' '.join(packages)}")
    if subprocess.run(argv, env=env, timeout=1200, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        return
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(argv, check=True, env=env, timeout=1200, stdout=subprocess.DEVNULL)


def can_install():
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def server_includedir(bindir, major, log):
    """The server headers (postgres.h), installing postgresql-server-dev-N at the
    server's exact version if they are missing: an unpinned install would pull the
    archive's newest server and upgrade the installed one along with it."""
    pg_config = os.path.join(bindir, "pg_config")

    def includedir():
        return subprocess.run([pg_config, "--includedir-server"], capture_output=True,
                              text=True, check=True).stdout.strip()
    if os.path.exists(os.path.join(includedir(), "postgres.h")):
        return includedir()
    if not can_install():
        raise RuntimeError(f"no server headers in {includedir()}: install "
                           f"postgresql-server-dev-{major} (at the server's version)")
    version = installed_version(f"postgresql-{major}")
    pkg = f"postgresql-server-dev-{major}"
    apt_install([f"{pkg}={version}" if version else pkg], log)
    if not os.path.exists(os.path.join(includedir(), "postgres.h")):
        raise RuntimeError(f"{pkg} installed but no postgres.h in {includedir()}")
    return includedir()


def fetch_source(major, version, dest, log):
    """Downloads Debian's postgresql-N source package into a temporary folder with a
    private source list and extracts src/test/regress into dest. Tries the installed
    version first; if the archive has dropped it, the newest one it has (the expected
    files then belong to another minor version: a few tests may differ)."""
    work = tempfile.mkdtemp(prefix="pgfleet-regress-src-")
    try:
        parts = os.path.join(work, "sources.list.d")
        lists = os.path.join(work, "lists")
        os.makedirs(os.path.join(lists, "partial"))
        os.makedirs(parts)
        with open(os.path.join(parts, "debian-src.sources"), "w") as f:
            f.write(APT_SOURCES)
        opts = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={parts}",
                "-o", f"Dir::State::Lists={lists}",
                # apt drops to its sandbox user for downloads; the folder is root's.
                "-o", "APT::Sandbox::User=root"]
        log("apt-get update (a private list of Debian source packages)")
        subprocess.run(["apt-get", *opts, "-qq", "update"], check=True, timeout=600,
                       capture_output=True)
        pkg = f"postgresql-{major}"
        tried = []
        for want in (f"{pkg}={version}" if version else None, pkg):
            if want is None:
                continue
            log(f"apt-get source --download-only {want}")
            r = subprocess.run(["apt-get", *opts, "-qq", "source", "--download-only", want],
                               cwd=work, timeout=1200, capture_output=True, text=True)
            tarballs = glob.glob(os.path.join(work, f"{pkg}_*.orig.tar.*"))
            if r.returncode == 0 and tarballs:
                break
            tried.append(f"{want}: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
            for leftover in glob.glob(os.path.join(work, f"{pkg}_*")):
                os.remove(leftover)
        else:
            raise RuntimeError("cannot download the PostgreSQL sources: " + "; ".join(tried))
        if want != f"{pkg}={version}":
            log(f"warning: the archive has no {pkg} {version} sources any more; using "
                f"{os.path.basename(tarballs[0])}: a few expected outputs may differ")
        extract_regress(tarballs[0], dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def extract_regress(tarball, dest):
    """src/test/regress of the tarball's top folder, the parts in SUITE_PARTS only."""
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with tarfile.open(tarball) as tar:
        for member in tar:
            path = member.name.split("/", 1)[-1]
            if not path.startswith("src/test/regress/"):
                continue
            rel = path[len("src/test/regress/"):]
            if ".." in rel.split("/") or rel.split("/", 1)[0] not in SUITE_PARTS or not (member.isfile() or member.isdir()):
                continue
            member.name = rel
            tar.extract(member, tmp, set_attrs=False)
    if not os.path.exists(os.path.join(tmp, "parallel_schedule")):
        raise RuntimeError(f"{tarball} has no src/test/regress/parallel_schedule")
    # Readable by all: the server, under its own user, reads the data files.
    for folder, dirs, files in os.walk(tmp):
        for d in dirs:
            os.chmod(os.path.join(folder, d), 0o755)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)


def build_regress_so(bindir, src, libdir, includedir, log):
    """regress.so from the suite's regress.c, with the server's own compiler flags."""
    pg_config = os.path.join(bindir, "pg_config")
    flags = []
    for opt in ("--cflags", "--cflags_sl"):
        flags += subprocess.run([pg_config, opt], capture_output=True, text=True,
                                check=True).stdout.split()
    cc = subprocess.run([pg_config, "--cc"], capture_output=True, text=True).stdout.split()
    if not cc or not shutil.which(cc[0]):
        cc = ["cc"]
    os.makedirs(libdir, exist_ok=True)
    log("building regress.so")
    r = subprocess.run([*cc, *flags, "-shared", "-I", includedir, "-o",
                        os.path.join(libdir, "regress.so"), os.path.join(src, "regress.c")],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"building regress.so failed: {r.stderr.strip()[-1000:]}")


def prepare(bindir, log, suite_dir=None):
    """The suite folder (sql, expected, data, parallel_schedule) and the folder of
    its modules (regress.so, autoinc.so, refint.so), both in the cache. suite_dir: a
    src/test/regress of one's own instead of Debian's sources."""
    major = major_of(bindir)
    version = installed_version(f"postgresql-{major}")
    if suite_dir:
        key = "custom-" + os.path.abspath(suite_dir).strip("/").replace("/", "_")
    elif version:
        key = version
    else:
        raise RuntimeError(f"postgresql-{major} is not a Debian package here: pass --suite "
                           "with a PostgreSQL source tree's src/test/regress")
    home = os.path.join(cache_root(), key)
    src = os.path.join(home, "regress")
    libdir = os.path.join(home, "lib")
    if suite_dir:
        if not os.path.exists(os.path.join(suite_dir, "parallel_schedule")):
            raise RuntimeError(f"{suite_dir}: no parallel_schedule (want src/test/regress)")
        src = os.path.abspath(suite_dir)
    elif not os.path.exists(os.path.join(src, "parallel_schedule")):
        if not can_install():
            raise RuntimeError("the suite is not in the cache and fetching it needs root "
                               "and apt-get (or pass --suite)")
        os.makedirs(home, exist_ok=True)
        fetch_source(major, version, src, log)
    if not os.path.exists(os.path.join(libdir, "regress.so")):
        includedir = server_includedir(bindir, major, log)
        build_regress_so(bindir, src, libdir, includedir, log)
    pkglibdir = subprocess.run([os.path.join(bindir, "pg_config"), "--pkglibdir"],
                               capture_output=True, text=True, check=True).stdout.strip()
    for mod in ("autoinc.so", "refint.so"):
        target = os.path.join(libdir, mod)
        if not os.path.exists(target):
            shutil.copy(os.path.join(pkglibdir, mod), target)
    return src, libdir
