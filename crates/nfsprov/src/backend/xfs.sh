# ---- xfs-project layout (issue 12) ----
# A volume of an xfs-project root path is a plain directory (made by nfsprov_mkg) carrying XFS
# project id PID (nfsprov's volume id, a number from its database) with a block hard limit of
# its size. xfs_quota takes the mount point of the file system (`stat -c %m`) and acts on the
# current directory (`-p .`): no path is ever put inside xfs_quota's own command text, and its
# tree walk does not follow symbolic links (nftw FTW_PHYS|FTW_MOUNT, xfsprogs quota/project.c).
#
# nfsprov_xpq PID: "used hard" (1 KiB blocks) of project PID on the file system mounted at
# $nfsprov_mp, from its project report; nothing when the report has no line for it.
nfsprov_xpq() {
  xfs_quota -x -c 'report -p -b -n -N' "$nfsprov_mp" 2>/dev/null | while read -r nfsprov_q nfsprov_u _ nfsprov_h _; do
    if [ "$nfsprov_q" = "#$1" ]; then printf '%s %s' "$nfsprov_u" "$nfsprov_h"; fi
  done
}
# nfsprov_xpset PID BYTES: in the current directory, a volume's root: project PID over the
# whole tree, its block hard limit BYTES, read back. Prints the reason and fails otherwise.
nfsprov_xpset() {
  case $1 in ''|0|*[!0-9]*) echo "project id $1 is not a positive number"; return 1 ;; esac
  if ! nfsprov_mp=$(stat -c %m -- . 2>&1) || [ -z "$nfsprov_mp" ]; then
    echo "cannot find the mount point of $PWD: $nfsprov_mp"; return 1
  fi
  if ! nfsprov_out=$(xfs_quota -x -c "project -s -p . $1" "$nfsprov_mp" 2>&1 >/dev/null) || [ -n "$nfsprov_out" ]; then
    echo "setting XFS project $1 on $PWD failed: $nfsprov_out"; return 1
  fi
  nfsprov_xplim "$1" "$2"
}
# nfsprov_xplim PID BYTES: project PID's block hard limit becomes BYTES on the file system
# mounted at $nfsprov_mp, read back. Prints the reason and fails otherwise.
nfsprov_xplim() {
  if ! nfsprov_out=$(xfs_quota -x -c "limit -p bhard=$2 $1" "$nfsprov_mp" 2>&1) || [ -n "$nfsprov_out" ]; then
    echo "limiting XFS project $1 ($PWD) to $2 bytes failed: $nfsprov_out"; return 1
  fi
  nfsprov_now=$(nfsprov_xpq "$1")
  if [ "${nfsprov_now#* }" != "$(($2 / 1024))" ]; then
    echo "XFS project $1 ($PWD): its hard limit reads ${nfsprov_now#* } KiB, not $(($2 / 1024)) ($2 bytes)"; return 1
  fi
}
# nfsprov_mkxp MARK ROOT PARENT OWNER MODE ID NAME ADOPT BYTES: a volume of an xfs-project root
# path: its directory as nfsprov_mkg makes it (same checks, mark, owner and mode), then project
# ID limited to BYTES (nfsprov_xpset). Reported done only when the limit reads back.
nfsprov_mkxp() {
  nfsprov_out=$(nfsprov_mkg x "$2" "$3" "$4" "$5" "$6" "$7" "$8")
  if [ "${nfsprov_out##* }" != 0 ]; then
    nfsprov_fail "$1" "$6" "${nfsprov_out%"$nfsprov_nl"*}"
    return 0
  fi
  if ! nfsprov_in "$2" "$3${3:+/}$7"; then
    nfsprov_fail "$1" "$6" "$nfsprov_why"
  elif ! nfsprov_out=$(nfsprov_xpset "$6" "$9"); then
    nfsprov_fail "$1" "$6" "$nfsprov_out"
  else
    nfsprov_say "$1" "$6" 0
  fi
  cd /
}
nfsprov_nl='
'
# nfsprov_xpoff ROOT SUB PID OWNED: before a volume's directory is removed or moved to the
# trash: project PID's limit back to 0 (PID is the volume's own id, so this touches no one
# else's project) and, in a directory that is the volume's (OWNED, or it carries the mark),
# the project id cleared from the tree (`project -C`). A directory already gone is fine.
# Failures are printed; the removal that follows goes on either way.
nfsprov_xpoff() {
  case $3 in ''|0|*[!0-9]*) return 0 ;; esac
  if nfsprov_in "$1" "$2" && nfsprov_mp=$(stat -c %m -- . 2>/dev/null); then
    xfs_quota -x -c "limit -p bhard=0 $3" "$nfsprov_mp" 2>&1
    if [ "$4" = 1 ] || nfsprov_ours . "$3"; then
      xfs_quota -x -c "project -C -p . $3" "$nfsprov_mp" 2>&1 >/dev/null
    fi
  fi
  cd /
}
