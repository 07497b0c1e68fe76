unset CDPATH
# nfsprov_st N: set $? to N. Process starts are what a small pass costs, so no `(exit N)`
# subshell (a fork each); the same goes for the checks before mkdir and rm below.
nfsprov_st() {
  return "$1"
}
# nfsprov_in ROOT SUB [mk]: cd into ROOT/SUB without following a symbolic link at or below ROOT
# (ROOT itself is the admin's and may be one). Each component is checked with -L for a clear
# message, and the physical path reached is compared with the expected one, so a link swapped
# in while walking is caught too; from then on the shell's cwd pins the directory. With mk,
# missing components are created (root-owned). Returns 1 (missing) or 2 (symbolic link) with
# the reason in nfsprov_why.
nfsprov_in() {
  nfsprov_why=
  cd -P -- "$1" 2>/dev/null || { nfsprov_why="the root path $1 does not exist on the server"; return 1; }
  nfsprov_base=${PWD%/} nfsprov_at=$1 nfsprov_rest=$2
  while [ -n "$nfsprov_rest" ]; do
    nfsprov_c=${nfsprov_rest%%/*}
    case $nfsprov_rest in */*) nfsprov_rest=${nfsprov_rest#*/} ;; *) nfsprov_rest= ;; esac
    nfsprov_at=$nfsprov_at/$nfsprov_c
    if [ -L "$nfsprov_c" ]; then
      nfsprov_why="$nfsprov_at is a symbolic link; nfsprov never follows symbolic links below a root path"
      return 2
    fi
    if [ "$3" = mk ] && [ ! -e "$nfsprov_c" ]; then mkdir -- "$nfsprov_c" 2>/dev/null; fi
    cd -P -- "$nfsprov_c" 2>/dev/null || { nfsprov_why="$nfsprov_at does not exist on the server or is not a directory"; return 1; }
  done
  if [ -n "$2" ] && [ "$PWD" != "$nfsprov_base/$2" ]; then
    nfsprov_why="$1/$2 is not where it should be: a component was replaced by a symbolic link"
    return 2
  fi
  return 0
}
# nfsprov_ours NAME ID: NAME holds the mark nfsprov leaves in a directory it created for
# volume ID, right after its mkdir: a regular file owned by root, which no other user can make.
nfsprov_ours() {
  [ -f "$1/.nfsprov-volume-$2" ] && [ ! -L "$1/.nfsprov-volume-$2" ] && [ -O "$1/.nfsprov-volume-$2" ]
}
# nfsprov_say MARK ID RC [TEXT]: report one volume's step.
nfsprov_say() {
  if [ -n "$4" ]; then printf '%s\n' "$4"; fi
  printf '%s %s %s\n' "$1" "$2" "$3"
}
# nfsprov_fail MARK ID TEXT: a volume whose directory is not safe to export; the managed file
# is then not installed this pass (nfsprov runs another pass without the volume).
nfsprov_fail() {
  nfsprov_say "$1" "$2" 1 "$3"
  nfsprov_bad=1
}
# nfsprov_mkg MARK ROOT PARENT OWNER MODE [ID NAME ADOPT]...: create volume directories that
# share a parent, owner and mode. The existence check and the creation are one step: mkdir
# without -p fails on anything already there, and a name that exists beforehand is accepted
# only if nfsprov_ours says so (a crash after an earlier mkdir) or an admin asked to adopt it.
nfsprov_mkg() {
  nfsprov_mark=$1 nfsprov_r=$2 nfsprov_p=$3 nfsprov_o=$4 nfsprov_m=$5
  shift 5
  nfsprov_at=$nfsprov_r${nfsprov_p:+/$nfsprov_p}
  if ! nfsprov_in "$nfsprov_r" "$nfsprov_p" mk; then
    while [ $# -ge 3 ]; do nfsprov_fail "$nfsprov_mark" "$1" "creating $nfsprov_at/$2 failed: $nfsprov_why"; shift 3; done
    cd /
    return 0
  fi
  nfsprov_dir=$PWD
  # 1. Classify. Survivors stay in "$@" as names, their ids and kinds (n: new, e: ours
  # already, a: adopt) go into parallel lists of words nfsprov wrote (numbers, letters). "$@"
  # is rebuilt once from the survivors' positions ("${N}", also nfsprov's words): appending
  # one name at a time would copy the whole list each time (quadratic in a group's size).
  nfsprov_ids= nfsprov_kinds= nfsprov_keep= nfsprov_i=0
  for nfsprov_w in "$@"; do
    nfsprov_i=$((nfsprov_i + 1))
    case $((nfsprov_i % 3)) in
      1) nfsprov_id=$nfsprov_w; continue ;;
      2) nfsprov_nm=$nfsprov_w; continue ;;
    esac
    nfsprov_ad=$nfsprov_w
    if [ -L "$nfsprov_nm" ]; then
      nfsprov_fail "$nfsprov_mark" "$nfsprov_id" "$nfsprov_at/$nfsprov_nm is a symbolic link; nfsprov never follows symbolic links below a root path"
      continue
    elif [ ! -e "$nfsprov_nm" ]; then
      nfsprov_k=n
    elif [ -d "$nfsprov_nm" ] && nfsprov_ours "$nfsprov_nm" "$nfsprov_id"; then
      nfsprov_k=e
    elif [ -d "$nfsprov_nm" ] && [ "$nfsprov_ad" = 1 ]; then
      nfsprov_k=a
    else
      nfsprov_fail "$nfsprov_mark" "$nfsprov_id" "$nfsprov_at/$nfsprov_nm already exists on the server and was not created by nfsprov; ask an admin to adopt it"
      continue
    fi
    nfsprov_keep="$nfsprov_keep \"\${$((nfsprov_i - 1))}\""
    nfsprov_ids="$nfsprov_ids$nfsprov_id " nfsprov_kinds="$nfsprov_kinds$nfsprov_k "
  done
  eval "set -- $nfsprov_keep"
  # 2. Create (root-only until chowned below); names that exist already just fail.
  if [ $# -gt 0 ]; then (umask 077 && mkdir -- "$@" 2>/dev/null); fi
  # 3. Enter each, check it is what step 1 decided, leave the mark. The mark is written
  # with noclobber (O_EXCL): never through a link someone put in its place; one already there
  # (e: checked in step 1) is left as it is.
  nfsprov_okids= nfsprov_keep= nfsprov_i=0
  set -C
  for nfsprov_nm in "$@"; do
    nfsprov_i=$((nfsprov_i + 1))
    nfsprov_id=${nfsprov_ids%% *} nfsprov_k=${nfsprov_kinds%% *}
    nfsprov_ids=${nfsprov_ids#* } nfsprov_kinds=${nfsprov_kinds#* }
    nfsprov_err=
    if [ "$nfsprov_k" = n ] && [ ! -e "$nfsprov_nm" ] && [ ! -L "$nfsprov_nm" ]; then
      # The batch's mkdir did not make it: once more alone, for the reason.
      nfsprov_out=$( (umask 077 && mkdir -- "$nfsprov_nm") 2>&1 ) || nfsprov_err="creating $nfsprov_at/$nfsprov_nm failed: $nfsprov_out"
    fi
    if [ -n "$nfsprov_err" ]; then
      :
    elif [ -L "$nfsprov_nm" ] || ! cd -P -- "$nfsprov_nm" 2>/dev/null; then
      nfsprov_err="creating $nfsprov_at/$nfsprov_nm failed: it is not a directory nfsprov can enter"
    elif [ "$PWD" != "$nfsprov_dir/$nfsprov_nm" ]; then
      nfsprov_err="$nfsprov_at/$nfsprov_nm was replaced by a symbolic link"
    elif [ "$nfsprov_k" = n ] && ! [ -O . ]; then
      nfsprov_err="$nfsprov_at/$nfsprov_nm already exists on the server and was not created by nfsprov; ask an admin to adopt it"
    elif [ "$nfsprov_k" = a ] && ! rm -f -- ".nfsprov-volume-$nfsprov_id" 2>/dev/null; then
      nfsprov_err="adopting $nfsprov_at/$nfsprov_nm failed: cannot replace its ownership mark"
    elif [ "$nfsprov_k" != e ] && ! printf 'created by nfsprov for volume %s\n' "$nfsprov_id" 2>/dev/null > ".nfsprov-volume-$nfsprov_id"; then
      nfsprov_err="creating $nfsprov_at/$nfsprov_nm failed: cannot write its ownership mark (file system full?)"
      if [ "$nfsprov_k" = n ]; then cd -P .. && rmdir -- "$nfsprov_nm" 2>/dev/null; fi
    fi
    cd -P -- "$nfsprov_dir" 2>/dev/null
    if [ "$PWD" != "$nfsprov_dir" ]; then
      nfsprov_fail "$nfsprov_mark" "$nfsprov_id" "$nfsprov_at was moved while creating volumes in it"
      continue
    fi
    if [ -n "$nfsprov_err" ]; then
      nfsprov_fail "$nfsprov_mark" "$nfsprov_id" "$nfsprov_err"
      continue
    fi
    nfsprov_keep="$nfsprov_keep \"\${$nfsprov_i}\""
    nfsprov_okids="$nfsprov_okids$nfsprov_id "
  done
  set +C
  eval "set -- $nfsprov_keep"
  # 4. Owner and mode. chmod follows symbolic links, so by name only in a parent no one but
  # root can change; elsewhere each directory from inside it.
  nfsprov_rc=1
  if [ $# -gt 0 ] && [ "$(find . -maxdepth 0 -user 0 ! -perm /022 -print 2>/dev/null)" = . ]; then
    chown -h -- "$nfsprov_o" "$@" 2>/dev/null && chmod -- "$nfsprov_m" "$@" 2>/dev/null
    nfsprov_rc=$?
  fi
  while [ $# -gt 0 ]; do
    nfsprov_id=${nfsprov_okids%% *} nfsprov_okids=${nfsprov_okids#* }
    if [ "$nfsprov_rc" = 0 ]; then
      nfsprov_say "$nfsprov_mark" "$nfsprov_id" 0
    else
      if cd -P -- "$1" 2>/dev/null && [ "$PWD" = "$nfsprov_dir/$1" ]; then
        nfsprov_out=$( { chown -- "$nfsprov_o" . && chmod -- "$nfsprov_m" . ; } 2>&1 )
        if [ $? = 0 ]; then nfsprov_say "$nfsprov_mark" "$nfsprov_id" 0; else nfsprov_fail "$nfsprov_mark" "$nfsprov_id" "$nfsprov_out"; fi
      else
        nfsprov_fail "$nfsprov_mark" "$nfsprov_id" "$nfsprov_at/$1 was replaced by a symbolic link"
      fi
      cd -P -- "$nfsprov_dir" 2>/dev/null || break
    fi
    shift
  done
  cd /
}
# nfsprov_rm MARK ID ROOT PARENT NAME POLICY TRASH OWNED: unexported volume's data: to the
# trash (retain) or removed (purge), never through a symbolic link: the parent is entered with
# nfsprov_in and the name acted on from there; a link at the name itself is removed, not
# followed; the trash directory is root's own (0700), checked the same way. Unless OWNED (the
# volume was verified once), a directory without nfsprov's mark is not the volume's: it is
# left in place (status 3).
nfsprov_rm() {
  nfsprov_in "$3" "$4"
  case $? in
    1) nfsprov_say "$1" "$2" 0; cd /; return 0 ;;
    2) nfsprov_say "$1" "$2" 1 "not removing $3/$4${4:+/}$5: $nfsprov_why"; cd /; return 0 ;;
  esac
  nfsprov_dir=$PWD
  if [ -L "$5" ]; then
    rm -f -- "$5"
    nfsprov_say "$1" "$2" $? "$3/$4${4:+/}$5 was a symbolic link; removed the link only"
  elif [ ! -e "$5" ]; then
    nfsprov_say "$1" "$2" 0
  elif [ "$8" != 1 ] && ! nfsprov_ours "$5" "$2"; then
    nfsprov_say "$1" "$2" 3
  elif [ "$9" = 1 ] && [ -d "$5" ] && [ -z "$(ls -A -- "$5" | grep -v -x -F ".nfsprov-volume-$2")" ]; then
    rm -f -- "$5/.nfsprov-volume-$2" && nfsprov_del "$5"
    nfsprov_say "$1" "$2" $?
  elif [ "$6" = purge ]; then
    nfsprov_out=$(nfsprov_del "$5" r 2>&1)
    nfsprov_say "$1" "$2" $? "$nfsprov_out"
  elif ! nfsprov_in "$3" .nfsprov-trash mk || ! [ -O . ]; then
    nfsprov_say "$1" "$2" 1 "not moving $3/$4${4:+/}$5 to the trash: ${nfsprov_why:-$3/.nfsprov-trash is not root's own}"
  else
    chmod 0700 . 2>/dev/null
    nfsprov_trash=$PWD
    if cd -P -- "$nfsprov_dir" 2>/dev/null && [ "$PWD" = "$nfsprov_dir" ]; then
      nfsprov_out=$(mv -T -- "$5" "$nfsprov_trash/$7" 2>&1)
      nfsprov_say "$1" "$2" $? "$nfsprov_out"
    else
      nfsprov_say "$1" "$2" 1 "$3/$4 was moved while removing $5"
    fi
  fi
  cd /
}
# nfsprov_del NAME [r]: remove NAME in the current directory: a btrfs subvolume (a volume of a
# btrfs root path) with `btrfs subvolume delete`, whatever it holds (the kernel drops its qgroup
# once the subvolume is cleaned up), anything else with rmdir, or rm -rf given r.
nfsprov_del() {
  if [ ! -L "$1" ] && (cd -P -- "$1" 2>/dev/null && nfsprov_issv); then
    btrfs subvolume delete -- "$1" >/dev/null
  elif [ "$2" = r ]; then
    rm -rf -- "$1"
  else
    rmdir -- "$1"
  fi
}
# nfsprov_chk MARK ID ROOT SUB: an export path must not lead through a symbolic link.
nfsprov_chk() {
  nfsprov_in "$3" "$4"
  if [ $? = 2 ]; then nfsprov_fail "$1" "$2" "not exporting $3/$4: $nfsprov_why"; fi
  cd /
}
# nfsprov_issv: the current directory is the root of a btrfs subvolume (inode 256 on btrfs).
nfsprov_issv() {
  [ "$(stat -f -c %T . 2>/dev/null)" = btrfs ] && [ "$(stat -c %i . 2>/dev/null)" = 256 ]
}
# nfsprov_restore ROOT VID NAME DEST: DEST (an absolute path) becomes a writable snapshot of
# snapshot NAME of volume VID (restore into a new volume); the snapshot is reached without
# following a symbolic link and must carry the volume's mark.
nfsprov_restore() {
  if ! nfsprov_in "$1" ".nfsprov-snapshots/$2"; then printf '%s\n' "$nfsprov_why"; return 1; fi
  if [ -L "$3" ] || ! (cd -P -- "$3" 2>/dev/null && nfsprov_issv) || ! nfsprov_ours "$3" "$2"; then
    printf '%s\n' "$1/.nfsprov-snapshots/$2/$3 is not a snapshot nfsprov made of volume $2"
    return 1
  fi
  btrfs subvolume snapshot -- "$PWD/$3" "$4" >/dev/null
}
# nfsprov_mksv MARK ROOT PARENT OWNER MODE ID NAME BYTES [SVID SNAME]: a volume of a btrfs root path: a
# subvolume limited to BYTES by its qgroup. Like nfsprov_mkg: `btrfs subvolume create` fails on
# anything already there (check and create are one step), a name that exists beforehand is
# accepted only if it is a subvolume carrying nfsprov's mark for ID (a pass cut short), nothing
# is done through a symbolic link, and the mark is written from inside, root-only, with
# noclobber. The limit is set from inside the subvolume and read back: the volume is reported
# done only if its qgroup's max_referenced is BYTES. Given SVID and SNAME (a restore), the
# subvolume is a writable snapshot of that snapshot, whose copied mark of volume SVID is
# replaced by this volume's.
nfsprov_mksv() {
  nfsprov_at=$2${3:+/$3}
  if ! nfsprov_in "$2" "$3" mk; then
    nfsprov_fail "$1" "$6" "creating $nfsprov_at/$7 failed: $nfsprov_why"
    cd /
    return 0
  fi
  nfsprov_dir=$PWD nfsprov_err= nfsprov_k=
  if [ -L "$7" ]; then
    nfsprov_err="$nfsprov_at/$7 is a symbolic link; nfsprov never follows symbolic links below a root path"
  elif [ ! -e "$7" ] && [ -n "$9" ]; then
    nfsprov_out=$(nfsprov_restore "$2" "$9" "${10}" "$nfsprov_dir/$7" 2>&1) || nfsprov_err="restoring snapshot ${10} of volume $9 into $nfsprov_at/$7 failed: $nfsprov_out"
    nfsprov_k=r
  elif [ ! -e "$7" ]; then
    nfsprov_out=$(btrfs subvolume create -- "$7" 2>&1) || nfsprov_err="creating btrfs subvolume $nfsprov_at/$7 failed: $nfsprov_out"
    nfsprov_k=n
  elif [ -d "$7" ] && nfsprov_ours "$7" "$6"; then
    nfsprov_k=e
  elif [ -n "$9" ] && [ -d "$7" ] && nfsprov_ours "$7" "$9"; then
    # Restored by a pass cut short before the volume's own mark was written.
    nfsprov_k=r
  else
    nfsprov_err="$nfsprov_at/$7 already exists on the server and was not created by nfsprov"
  fi
  if [ -z "$nfsprov_err" ]; then
    if [ -L "$7" ] || ! cd -P -- "$7" 2>/dev/null || [ "$PWD" != "$nfsprov_dir/$7" ]; then
      nfsprov_err="$nfsprov_at/$7 was replaced while creating it"
    elif ! nfsprov_issv; then
      nfsprov_err="$nfsprov_at/$7 is not a btrfs subvolume"
    elif [ "$nfsprov_k" = n ] && ! { [ -O . ] && chmod 0700 . ; }; then
      nfsprov_err="$nfsprov_at/$7 already exists on the server and was not created by nfsprov"
    elif [ "$nfsprov_k" = r ] && ! { nfsprov_ours . "$9" && chmod 0700 . && rm -f -- ".nfsprov-volume-$9" ; }; then
      nfsprov_err="$nfsprov_at/$7 is not the copy of snapshot ${10} nfsprov made"
    elif [ "$nfsprov_k" = r ] && ! (set -C; printf 'created by nfsprov for volume %s\n' "$6" 2>/dev/null > ".nfsprov-volume-$6"); then
      nfsprov_err="creating $nfsprov_at/$7 failed: cannot write its ownership mark"
    elif [ "$nfsprov_k" = n ] && ! (set -C; printf 'created by nfsprov for volume %s\n' "$6" 2>/dev/null > ".nfsprov-volume-$6"); then
      nfsprov_err="creating $nfsprov_at/$7 failed: cannot write its ownership mark"
    elif ! nfsprov_out=$(btrfs qgroup limit -- "$8" . 2>&1); then
      nfsprov_err="limiting btrfs subvolume $nfsprov_at/$7 to $8 bytes failed: $nfsprov_out"
    else
      nfsprov_sv=$(btrfs inspect-internal rootid . 2>/dev/null)
      nfsprov_max=$(btrfs qgroup show -r --raw -f . 2>/dev/null | while read -r nfsprov_q _ _ nfsprov_m _; do
        if [ "$nfsprov_q" = "0/$nfsprov_sv" ]; then printf '%s' "$nfsprov_m"; fi
      done)
      if [ -z "$nfsprov_sv" ] || [ "$nfsprov_max" != "$8" ]; then
        nfsprov_err="btrfs subvolume $nfsprov_at/$7: its qgroup limit reads ${nfsprov_max:-nothing}, not $8 bytes"
      elif ! nfsprov_out=$( { chown -- "$4" . && chmod -- "$5" . ; } 2>&1 ); then
        nfsprov_err="$nfsprov_out"
      fi
    fi
  fi
  if [ -n "$nfsprov_err" ]; then nfsprov_fail "$1" "$6" "$nfsprov_err"; else nfsprov_say "$1" "$6" 0; fi
  cd /
}
# ---- snapshots (issue 12) ----
# nfsprov_snapdir ROOT VID: enter ROOT/.nfsprov-snapshots/VID, creating what is missing; both
# levels must be root's own and are kept 0700, so only root can make anything in them.
nfsprov_snapdir() {
  nfsprov_in "$1" .nfsprov-snapshots mk || return 1
  if ! [ -O . ]; then nfsprov_why="$1/.nfsprov-snapshots is not root's own"; return 1; fi
  chmod 0700 . 2>/dev/null
  if [ -L "$2" ]; then nfsprov_why="$1/.nfsprov-snapshots/$2 is a symbolic link"; return 1; fi
  if [ ! -e "$2" ]; then mkdir -m 0700 -- "$2" 2>/dev/null; fi
  nfsprov_sdp=$PWD
  if ! cd -P -- "$2" 2>/dev/null || [ "$PWD" != "$nfsprov_sdp/$2" ] || ! [ -O . ]; then
    nfsprov_why="$1/.nfsprov-snapshots/$2 is not a directory of root's own"
    return 1
  fi
  chmod 0700 . 2>/dev/null
}
# nfsprov_isro NAME: NAME (in the current directory) is a read-only btrfs subvolume.
nfsprov_isro() {
  [ "$(btrfs property get -ts -- "$1" ro 2>/dev/null)" = ro=true ]
}
# nfsprov_snap MARK SID ROOT SUB VID NAME new|old: a read-only snapshot of volume VID (ROOT/SUB, a
# subvolume carrying nfsprov's mark) at ROOT/.nfsprov-snapshots/VID/NAME. A NAME already
# there is accepted only as a read-only subvolume carrying the volume's mark (a snapshot this
# step made before, as the mark is copied with the volume); nothing else is taken over. The
# snapshot's exclusive bytes are printed (`excl N`) from its qgroup. With old (a snapshot
# recorded as made) a missing one is reported, never made again.
nfsprov_snap() {
  nfsprov_err=
  if ! nfsprov_snapdir "$3" "$5"; then
    nfsprov_say "$1" "$2" 1 "snapshot directory for volume $5: $nfsprov_why"; cd /; return 0
  fi
  nfsprov_sd=$PWD nfsprov_at=$3/.nfsprov-snapshots/$5/$6
  if [ -L "$6" ]; then
    nfsprov_err="$nfsprov_at is a symbolic link; nfsprov never follows symbolic links below a root path"
  elif [ -e "$6" ]; then
    if ! (cd -P -- "$6" 2>/dev/null && nfsprov_issv) || ! nfsprov_ours "$6" "$5" || ! nfsprov_isro "$6"; then
      nfsprov_err="$nfsprov_at already exists on the server and is not a snapshot nfsprov made of volume $5"
    fi
  elif [ "$7" = old ]; then
    nfsprov_err="$nfsprov_at is missing on the server (removed by hand?); it is not made again from the volume's current data"
  elif ! nfsprov_in "$3" "$4"; then
    nfsprov_err="cannot snapshot volume $5: $nfsprov_why"
  elif ! nfsprov_issv || ! nfsprov_ours . "$5"; then
    nfsprov_err="cannot snapshot volume $5: $3/$4 is not a btrfs subvolume nfsprov made for it"
  elif ! nfsprov_out=$(btrfs subvolume snapshot -r -- . "$nfsprov_sd/$6" 2>&1); then
    nfsprov_err="creating snapshot $nfsprov_at failed: $nfsprov_out"
  fi
  if [ -z "$nfsprov_err" ]; then
    if ! cd -P -- "$nfsprov_sd" 2>/dev/null || [ "$PWD" != "$nfsprov_sd" ] || ! nfsprov_isro "$6"; then
      nfsprov_err="$nfsprov_at is not a read-only btrfs subvolume after creating it"
    fi
  fi
  if [ -n "$nfsprov_err" ]; then nfsprov_say "$1" "$2" 1 "$nfsprov_err"; cd /; return 0; fi
  nfsprov_sv=$(cd -P -- "$6" && btrfs inspect-internal rootid . 2>/dev/null)
  # A new snapshot's size is read after a sync (one per made snapshot); a full pass's check of
  # old ones reads what the last commit shows (btrfs commits every 30 s by default).
  if [ "$7" = new ]; then nfsprov_sy=--sync; else nfsprov_sy=; fi
  btrfs qgroup show --raw $nfsprov_sy -f -- "$6" 2>/dev/null | while read -r nfsprov_q _ nfsprov_x _; do
    if [ "$nfsprov_q" = "0/$nfsprov_sv" ]; then printf 'excl %s\n' "$nfsprov_x"; fi
  done
  nfsprov_say "$1" "$2" 0
  cd /
}
# nfsprov_snapdel MARK SID ROOT VID NAME: remove snapshot NAME of volume VID; one that is not
# there is done; one that is not a subvolume carrying the volume's mark is left (status 1).
nfsprov_snapdel() {
  nfsprov_in "$3" ".nfsprov-snapshots/$4"
  case $? in
    1) nfsprov_say "$1" "$2" 0; cd /; return 0 ;;
    2) nfsprov_say "$1" "$2" 1 "not removing snapshot $5: $nfsprov_why"; cd /; return 0 ;;
  esac
  nfsprov_at=$3/.nfsprov-snapshots/$4/$5
  if [ -L "$5" ]; then
    rm -f -- "$5"
    nfsprov_say "$1" "$2" $? "$nfsprov_at was a symbolic link; removed the link only"
  elif [ ! -e "$5" ]; then
    nfsprov_say "$1" "$2" 0
  elif (cd -P -- "$5" 2>/dev/null && nfsprov_issv) && nfsprov_ours "$5" "$4"; then
    nfsprov_out=$(btrfs subvolume delete -- "$5" 2>&1 >/dev/null)
    nfsprov_say "$1" "$2" $? "$nfsprov_out"
  else
    nfsprov_say "$1" "$2" 1 "$nfsprov_at is not a snapshot nfsprov made of volume $4; left in place"
  fi
  cd /
}
