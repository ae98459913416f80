// SPDX-License-Identifier: GPL-2.0
/*
 * A FUSE file system whose statfs answers with figures of the caller's
 * choosing, and a reader that reads the system_stats files with it as its
 * root.  For tests/module/test_system_stats.py, run as an ordinary user in
 * a user + mount namespace of its own (unshare -Urm), as any user can on a
 * distribution that allows user namespaces and ships /dev/fuse as 0666.
 *
 *     hostile_fuse BLOCKS BFREE BAVAIL BSIZE FRSIZE
 *
 * It mounts the file system (straight against /dev/fuse, no libfuse) on a
 * new directory in /tmp, serves it in one child, and in another opens
 * /proc/system_stats and /proc/system_stats.json, chroots into the mount,
 * and only then reads both, so that the module measures the FUSE root.
 * Output: "statvfs BLOCKS BFREE BAVAIL BSIZE FRSIZE" as the reader's own
 * statvfs("/") saw them, each file after a "--- NAME ---" line, and a last
 * line "reader: exit N" or "reader: signal N".  The exit status is 0 only
 * if the reader exited normally with status 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fuse.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* Requests are small; the kernel wants room for a max_write payload. */
#define MAX_WRITE 4096
#define BUF_SIZE (FUSE_MIN_READ_BUFFER + MAX_WRITE)

static struct fuse_kstatfs answer;

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static uint64_t parse_u64(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *s == '-' || *end || end == s) {
		fprintf(stderr, "hostile_fuse: not a number: %s\n", s);
		exit(2);
	}
	return v;
}

static uint32_t parse_u32(const char *s)
{
	uint64_t v = parse_u64(s);

	if (v > UINT32_MAX) {
		fprintf(stderr, "hostile_fuse: over 32 bits: %s\n", s);
		exit(2);
	}
	return (uint32_t)v;
}

/* One reply: the header, then @len bytes of @body; error replies have none. */
static void reply(int fd, uint64_t unique, int error, const void *body, size_t len)
{
	struct fuse_out_header out = {
		.len = (uint32_t)(sizeof(out) + len),
		.error = error,
		.unique = unique,
	};
	struct iovec iov[2] = {
		{ .iov_base = &out, .iov_len = sizeof(out) },
		{ .iov_base = (void *)body, .iov_len = len },
	};

	/* ENOENT: the request was interrupted meanwhile, nothing to do. */
	if (writev(fd, iov, len ? 2 : 1) < 0 && errno != ENOENT)
		die("write /dev/fuse");
}

static void root_attr(struct fuse_attr *attr)
{
	memset(attr, 0, sizeof(*attr));
	attr->ino = FUSE_ROOT_ID;
	attr->mode = S_IFDIR | 0755;
	attr->nlink = 2;
	attr->uid = getuid();
	attr->gid = getgid();
	attr->blksize = 4096;
}

/* Answers until the file system is unmounted or the connection aborted. */
static void serve(int fd)
{
	static char buf[BUF_SIZE];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		const struct fuse_in_header *in = (const void *)buf;
		const void *arg = buf + sizeof(*in);

		if (n < 0) {
			if (errno == EINTR || errno == ENOENT || errno == EAGAIN)
				continue;
			if (errno == ENODEV)
				exit(0);
			die("read /dev/fuse");
		}
		if ((size_t)n < sizeof(*in))
			continue;

		switch (in->opcode) {
		case FUSE_INIT: {
			const struct fuse_init_in *init = arg;
			struct fuse_init_out out = {
				.major = FUSE_KERNEL_VERSION,
				.minor = init->minor < FUSE_KERNEL_MINOR_VERSION ?
					 init->minor : FUSE_KERNEL_MINOR_VERSION,
				.max_readahead = init->max_readahead,
				.max_write = MAX_WRITE,
			};

			reply(fd, in->unique, 0, &out, sizeof(out));
			break;
		}
		case FUSE_GETATTR: {
			struct fuse_attr_out out = { .attr_valid = 3600 };

			if (in->nodeid != FUSE_ROOT_ID) {
				reply(fd, in->unique, -ENOENT, NULL, 0);
				break;
			}
			root_attr(&out.attr);
			reply(fd, in->unique, 0, &out, sizeof(out));
			break;
		}
		case FUSE_STATFS: {
			struct fuse_statfs_out out = { .st = answer };

			reply(fd, in->unique, 0, &out, sizeof(out));
			break;
		}
		case FUSE_ACCESS:
			reply(fd, in->unique, 0, NULL, 0);
			break;
		case FUSE_LOOKUP:
			reply(fd, in->unique, -ENOENT, NULL, 0);
			break;
		case FUSE_FORGET:
		case FUSE_BATCH_FORGET:
		case FUSE_INTERRUPT:
			/* No reply: the kernel expects none. */
			break;
		default:
			reply(fd, in->unique, -ENOSYS, NULL, 0);
			break;
		}
	}
}

static void copy_fd(int fd, const char *name)
{
	char buf[65536];
	ssize_t n;

	printf("--- %s ---\n", name);
	fflush(stdout);
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			/* A clean error is an answer too: the test judges it. */
			printf("read error: %s\n", strerror(errno));
			break;
		}
		if (write(STDOUT_FILENO, buf, (size_t)n) != n)
			die("write stdout");
	}
}

/* The reader: files opened outside, read with the FUSE mount as its root. */
static void read_stats(const char *dir)
{
	int text = open("/proc/system_stats", O_RDONLY | O_CLOEXEC);
	int json = open("/proc/system_stats.json", O_RDONLY | O_CLOEXEC);
	struct statvfs sv;

	if (text < 0 || json < 0)
		die("open /proc/system_stats*");
	if (chroot(dir) || chdir("/"))
		die("chroot into the FUSE mount");
	if (statvfs("/", &sv))
		die("statvfs /");
	printf("statvfs %llu %llu %llu %lu %lu\n",
	       (unsigned long long)sv.f_blocks, (unsigned long long)sv.f_bfree,
	       (unsigned long long)sv.f_bavail, sv.f_bsize, sv.f_frsize);
	copy_fd(text, "system_stats");
	copy_fd(json, "system_stats.json");
	exit(0);
}

static pid_t spawn(void (*child)(void))
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		child();
	}
	return pid;
}

static int fuse_fd;
static char mnt[] = "/tmp/hostile-fuse.XXXXXX";

static void server_main(void)
{
	serve(fuse_fd);
	exit(0);
}

static void reader_main(void)
{
	close(fuse_fd);
	read_stats(mnt);
}

int main(int argc, char **argv)
{
	char opts[128];
	pid_t server, reader;
	int status;

	if (argc != 6) {
		fprintf(stderr, "usage: hostile_fuse BLOCKS BFREE BAVAIL BSIZE FRSIZE\n");
		return 2;
	}
	answer.blocks = parse_u64(argv[1]);
	answer.bfree = parse_u64(argv[2]);
	answer.bavail = parse_u64(argv[3]);
	answer.bsize = parse_u32(argv[4]);
	answer.frsize = parse_u32(argv[5]);
	answer.namelen = 255;

	if (!mkdtemp(mnt))
		die("mkdtemp");
	fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fuse_fd < 0)
		die("open /dev/fuse");
	snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=%u,group_id=%u",
		 fuse_fd, getuid(), getgid());
	if (mount("hostile", mnt, "fuse", MS_NOSUID | MS_NODEV, opts))
		die("mount -t fuse");

	setvbuf(stdout, NULL, _IONBF, 0);
	server = spawn(server_main);
	/* From here the server's descriptor alone keeps the connection up. */
	close(fuse_fd);
	reader = spawn(reader_main);

	if (waitpid(reader, &status, 0) < 0)
		die("waitpid reader");
	if (WIFSIGNALED(status))
		printf("reader: signal %d\n", WTERMSIG(status));
	else
		printf("reader: exit %d\n", WEXITSTATUS(status));

	kill(server, SIGKILL);
	waitpid(server, NULL, 0);
	if (umount2(mnt, MNT_DETACH))
		perror("umount");
	rmdir(mnt);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
