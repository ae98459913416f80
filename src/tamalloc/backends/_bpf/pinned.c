// SPDX-License-Identifier: GPL-2.0-only
/*
 * Opening the task iterator that `tamalloc bpf pin` left in bpffs, as root left it.
 *
 * A pinned iterator shows every process to whoever may open it, whatever hidepid says,
 * so the pin command makes the directory 0700 and the pin 0600, both root's, and this
 * refuses anything else: a directory that is not on bpffs (bpffs not mounted there), not
 * root's or writable by others; a pin that is a symlink, a directory, not root's or open
 * to others; an object that is not a task iterator link (a pinned map or program), or
 * whose program is not ours.  A record layout of another tamalloc version cannot be
 * met here: the pin's name carries the object's hash (bpf.py), and read()'s length is
 * checked against the record size when decoded.
 */
#include "bpfiter.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <linux/magic.h>

#define PROG_NAME "tam_memstats"

static int refuse(int err, const char *why)
{
	bpfiter_os_error(err, why);
	return -1;
}

/* The link's type and target, then its program's name where we may ask (getting a
 * program by id needs CAP_SYS_ADMIN: without it the checks above stand alone). */
static int check_link(int fd)
{
	struct bpf_link_info info;
	struct bpf_prog_info prog;
	__u32 len = sizeof(info);
	char target[32] = "";
	int prog_fd, iter;

	/* The info call answers for maps and programs too, in their own layout: only
	 * an iterator link lets an iterator be created from it. */
	iter = bpf_iter_create(fd);
	if (iter < 0)
		return refuse(errno, "the pinned object is not a BPF iterator link");
	close(iter);
	memset(&info, 0, sizeof(info));
	info.iter.target_name = (__u64)(unsigned long)target;
	info.iter.target_name_len = sizeof(target);
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return refuse(errno, "the pinned link");
	if (info.type != BPF_LINK_TYPE_ITER || strncmp(target, "task", sizeof(target)))
		return refuse(EINVAL, "the pinned link is not a task iterator");
	prog_fd = bpf_prog_get_fd_by_id(info.prog_id);
	if (prog_fd < 0)
		return errno == EPERM ? 0 : refuse(errno, "the pinned link's program");
	memset(&prog, 0, sizeof(prog));
	len = sizeof(prog);
	if (bpf_obj_get_info_by_fd(prog_fd, &prog, &len)) {
		int err = errno;

		close(prog_fd);
		return refuse(err, "the pinned link's program");
	}
	close(prog_fd);
	if (strncmp(prog.name, PROG_NAME, sizeof(prog.name)))
		return refuse(EINVAL, "the pinned iterator's program is not tam_memstats");
	return 0;
}

int bpfiter_open_checked(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct statfs fs;
	struct stat st;
	int dfd, fd;

	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return refuse(EINVAL, "the pin's name must be one path component");
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return refuse(ENAMETOOLONG, "the pin's path");
	dfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return refuse(errno, "the pin directory");
	if (fstatfs(dfd, &fs) || fstat(dfd, &st)) {
		int err = errno;

		close(dfd);
		return refuse(err, "the pin directory");
	}
	if ((unsigned long)fs.f_type != BPF_FS_MAGIC) {
		close(dfd);
		return refuse(ENOTSUP, "the pin directory is not on bpffs (mount -t bpf bpf /sys/fs/bpf)");
	}
	if (st.st_uid != 0 || (st.st_mode & 022)) {
		close(dfd);
		return refuse(EPERM, "the pin directory is not root's alone");
	}
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW)) {
		int err = errno;

		close(dfd);
		return refuse(err, "the pin");
	}
	close(dfd);
	if (!S_ISREG(st.st_mode))
		return refuse(EINVAL, "the pin is not a pinned object (a symlink or a directory)");
	if (st.st_uid != 0 || (st.st_mode & 077))
		return refuse(EPERM, "the pin is not root's alone (mode 0600)");
	/* Checked by path, then opened by path: only root may change the directory. */
	fd = bpf_obj_get(path);
	if (fd < 0)
		return refuse(errno, "cannot open the pinned iterator");
	if (check_link(fd)) {
		close(fd);
		return -1;
	}
	return fd;
}
