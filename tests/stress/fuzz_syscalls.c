// SPDX-License-Identifier: GPL-2.0
/*
 * fuzz_syscalls: random and boundary arguments for tamalloc(2) (548),
 * get_mem_stats(2) (549) and get_total_mem_stats(2) (550), every return
 * checked against what the ABI (docs/abi.md) allows for those arguments.
 *
 *   fuzz_syscalls [-n CALLS] [-s SEED] [-j WORKERS]
 *
 * -j: that many worker processes share the calls (worker j: seed SEED+j),
 * racing each other's walks, forks and mappings.
 *
 * Arguments: pids 0, 1, -1, INT_MIN, INT_MAX, pid_max and its neighbours,
 * our pid, our thread ids, a zombie child, a reaped child, random pids and
 * random 64-bit garbage in the upper halves of 32-bit arguments (the kernel
 * must truncate them); record sizes 0, VER0-1, VER0, 4096, 4097, huge;
 * counts 0, 1, UINT_MAX; random flag bits; buffers NULL, below
 * mmap_min_addr, non-canonical, kernel addresses, read-only, PROT_NONE, an
 * unmapped hole, and buffers that end inside an unmapped, read-only or
 * PROT_NONE page; tamalloc() sizes 0, 1, pages, huge, ~0UL, with
 * TAMALLOC_HUGE and unknown flags (whatever succeeds is checked and
 * munmap()ed at once).
 *
 * The oracle: argument errors must give exactly EINVAL; otherwise a call
 * gives a valid result or an errno of its allowed set:
 *   tamalloc             EINVAL (flags, size 0), ENOMEM (too large)
 *   get_mem_stats        EINVAL, ESRCH, EFAULT, EOVERFLOW
 *   get_total_mem_stats  EINVAL, EFAULT
 * (EINTR is returned only for a fatal signal, which the caller never sees.)
 * and each errno only where it can apply (EFAULT only if the buffer cannot
 * hold what the call would write, ESRCH only for a pid that may not exist,
 * EOVERFLOW only for a count below the number of processes).  A valid result
 * has self-consistent records (stress_common.h), nothing written past them,
 * and for our own pid and thread ids our pid and name.
 *
 * Prints the seed first, then calls, calls/s and the errno histogram per
 * call; exits 1 if any result was invalid, 2 on a usage or setup error.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include "stress_common.h"

#define PAGE		4096ul
#define GOOD_PAGES	512ul		/* 2 MiB of writable buffer */
#define NR_HELPERS	2
#define USER_TOP	(1ul << 47)	/* 4-level paging: the mmap window */
#define PMD		(2ul << 20)
#define POISON		0xa5

enum call { C_TAMALLOC, C_MEM, C_TOTAL, NR_CALLS };
static const char *const call_name[NR_CALLS] = {
	"tamalloc", "get_mem_stats", "get_total_mem_stats",
};

static uint64_t rng;
static unsigned long hist[NR_CALLS][256];
static unsigned long ncalls, children;
static int pid_max, self;
static pid_t tids[NR_HELPERS];
static pid_t zombie = -1, reaped = -1;
static char self_comm[16];

/* xorshift64*: deterministic for a seed, printed so a failure can be rerun */
static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static int chance(unsigned int percent)
{
	return below(100) < percent;
}

static void count(enum call c, long ret)
{
	int e = ret < 0 ? errno : 0;

	ncalls++;
	hist[c][e < 256 ? e : 255]++;
}

/* ---- buffers ------------------------------------------------------------ */

struct buf {
	const char *name;
	unsigned char *p;
	size_t writable;	/* bytes writable from p on */
};

static unsigned char *good;	/* GOOD_PAGES writable, then a PROT_NONE page */
static unsigned char *rw_hole;	/* one writable page, then an unmapped page */
static unsigned char *rw_ro;	/* one writable page, then a read-only page */
static unsigned char *ro_page, *none_page, *hole;

static void *map(size_t len, int prot)
{
	void *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	return p;
}

static void setup_buffers(void)
{
	unsigned char *r;

	good = map((GOOD_PAGES + 1) * PAGE, PROT_READ | PROT_WRITE);
	if (mprotect(good + GOOD_PAGES * PAGE, PAGE, PROT_NONE))
		exit(2);

	/* [rw][hole][ro][none]: the hole stays unmapped, see pick_buffer() */
	r = map(4 * PAGE, PROT_READ | PROT_WRITE);
	rw_hole = r;
	hole = r + PAGE;
	ro_page = r + 2 * PAGE;
	none_page = r + 3 * PAGE;
	if (munmap(hole, PAGE) || mprotect(ro_page, PAGE, PROT_READ) ||
	    mprotect(none_page, PAGE, PROT_NONE))
		exit(2);

	rw_ro = map(2 * PAGE, PROT_READ | PROT_WRITE);
	if (mprotect(rw_ro + PAGE, PAGE, PROT_READ))
		exit(2);
}

/* A writable page followed by an unwritable one: end k bytes before it. */
static struct buf straddle(const char *name, unsigned char *page, size_t want)
{
	size_t k = below(want + 64);
	struct buf b = { name, page + PAGE - (k > PAGE ? PAGE : k), 0 };

	b.writable = page + PAGE - b.p;
	return b;
}

static struct buf pick_buffer(size_t want)
{
	static const uintptr_t bad[] = {
		0x1000,				/* below mmap_min_addr */
		0xfff,
		0x00007ffffffff000ul,		/* last page below TASK_SIZE_MAX */
		0x0000800000000000ul,		/* first non-canonical */
		0xdead000000000000ul,
		0xffff800000000000ul,
		0xffff888000000000ul,		/* direct map */
		0xffffc90000000000ul,		/* vmalloc */
		0xffffea0000000000ul,		/* vmemmap */
		0xffffffff81000000ul,		/* kernel text */
		0xffffffffff600000ul,		/* vsyscall page */
		0xfffffffffffff000ul,
		~0ul,
	};
	struct buf b = { "good", NULL, 0 };
	size_t off;

	switch (below(16)) {
	case 0:
		b.name = "NULL";
		return b;
	case 1:
		b.name = "bad-address";
		b.p = (unsigned char *)bad[below(sizeof(bad) / sizeof(bad[0]))];
		return b;
	case 2:
		b.name = "read-only";
		b.p = ro_page + below(PAGE);
		return b;
	case 3:
		b.name = "PROT_NONE";
		b.p = none_page + below(PAGE);
		return b;
	case 4:
		b.name = "unmapped";
		b.p = hole + below(PAGE);
		return b;
	case 5:
		return straddle("into-unmapped", rw_hole, want);
	case 6:
		return straddle("into-read-only", rw_ro, want);
	case 7:
		/* the last bytes of the good area, then its PROT_NONE guard */
		off = below(want + 64);
		if (off > GOOD_PAGES * PAGE)
			off = GOOD_PAGES * PAGE;
		b.name = "into-PROT_NONE";
		b.p = good + GOOD_PAGES * PAGE - off;
		b.writable = off;
		return b;
	default:
		/* any alignment, mostly near the start */
		off = chance(50) ? below(64) : below(GOOD_PAGES * PAGE);
		b.p = good + off;
		b.writable = GOOD_PAGES * PAGE - off;
		return b;
	}
}

/* Fill what a correct kernel may write plus a margin, to catch overruns. */
#define WINDOW (64u * 1024u)
static size_t poison(const struct buf *b)
{
	size_t n = b->writable < WINDOW ? b->writable : WINDOW;

	if (n)
		memset(b->p, POISON, n);
	return n;
}

static int untouched_after(const struct buf *b, size_t from, size_t n)
{
	size_t i;

	for (i = from; i < n; i++)
		if (b->p[i] != POISON)
			return 0;
	return 1;
}

/* ---- argument pools ----------------------------------------------------- */

static unsigned int pick_size(unsigned int ver0)
{
	switch (below(24)) {
	case 0: return 0;
	case 1: return 1;
	case 2: return ver0 - 1;
	case 3: return ver0 + 1;
	case 4: return 4095;
	case 5: return 4096;
	case 6: return 4097;
	case 7: return UINT_MAX;
	case 8: return 0x80000000u;
	case 9: return (unsigned int)rnd();
	case 10: return ver0 + 8 * (unsigned int)below(8);
	case 11: return ver0 + (unsigned int)below(4096 - ver0 + 1);
	default: return ver0;
	}
}

static unsigned int pick_count(void)
{
	switch (below(10)) {
	case 0: return 0;
	case 1: return 1;
	case 2: return UINT_MAX;
	case 3: return 0x80000000u;
	case 4: return 2 + (unsigned int)below(8);
	case 5: return (unsigned int)rnd();
	default: return 1 + (unsigned int)below(4096);
	}
}

static unsigned long pick_flags(void)
{
	if (chance(85))
		return 0;
	switch (below(4)) {
	case 0: return 1ul << below(64);
	case 1: return rnd();
	case 2: return ~0ul;
	default: return (1ul << below(64)) | 1;
	}
}

enum existence { MUST_EXIST, MAY_EXIST, MUST_NOT_EXIST };

struct pidarg {
	long raw;		/* what we pass, upper half possibly garbage */
	int pid;		/* what the kernel sees */
	enum existence exists;
	int ours;		/* our pid or one of our thread ids */
};

static struct pidarg pick_pid(void)
{
	struct pidarg a = { 0, 0, MAY_EXIST, 0 };

	switch (below(20)) {
	case 0: case 1: case 2: case 3: case 4: case 5:
		a.pid = 0;
		break;
	case 6: a.pid = 1; a.exists = MUST_EXIST; break;
	case 7: a.pid = -1; break;
	case 8: a.pid = INT_MIN; break;
	case 9: a.pid = INT_MAX; a.exists = MUST_NOT_EXIST; break;
	case 10: a.pid = pid_max; a.exists = MUST_NOT_EXIST; break;
	case 11: a.pid = pid_max + 1; a.exists = MUST_NOT_EXIST; break;
	case 12: a.pid = pid_max - 1; break;
	case 13: a.pid = self; a.exists = MUST_EXIST; a.ours = 1; break;
	case 14:
		a.pid = tids[below(NR_HELPERS)];
		a.exists = MUST_EXIST;
		a.ours = 1;
		break;
	case 15: a.pid = zombie > 0 ? zombie : getppid(); break;
	case 16: a.pid = reaped > 0 ? reaped : 2; break;
	case 17: a.pid = (int)rnd(); break;
	default: a.pid = 1 + (int)below(pid_max > 1024 ? 1024 : pid_max); break;
	}
	a.raw = (unsigned int)a.pid;
	if (chance(10))		/* garbage above bit 31: truncated by the ABI */
		a.raw |= (long)(rnd() << 32);
	else
		a.raw = a.pid;
	return a;
}

/* ---- the three calls ---------------------------------------------------- */

static void fuzz_tamalloc(void)
{
	static const unsigned long sizes[] = {
		0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE, PMD - 1, PMD, PMD + 1,
		64ul << 20, 1ul << 30, 1ul << 40, 1ul << 46, (1ul << 47) - PAGE,
		1ul << 47, (1ul << 47) + 1, 1ul << 48, 1ul << 63, ~0ul - PAGE + 2,
		~0ul - PAGE + 1, ~0ul,
	};
	unsigned long size, flags, len;
	int einval, enomem, must_succeed;
	long ret;
	int e;

	if (chance(60))
		size = sizes[below(sizeof(sizes) / sizeof(sizes[0]))];
	else if (chance(50))
		size = below(1ul << 24);
	else
		size = rnd() >> below(64);
	flags = chance(30) ? pick_flags() : (chance(50) ? TAMALLOC_HUGE : 0);

	ret = sys_tamalloc(size, flags);
	e = errno;
	count(C_TAMALLOC, ret);

	len = (size + PAGE - 1) & ~(PAGE - 1);
	einval = (flags & ~(unsigned long)TAMALLOC_HUGE) || !size;
	enomem = !einval && (!len || len > USER_TOP ||
			     ((flags & TAMALLOC_HUGE) && len > USER_TOP - PMD));
	/* NORESERVE under overcommit 0: any modest size is just address space */
	must_succeed = !einval && !enomem && len <= (1ul << 30);

	if (ret < 0) {
		if (einval && e != EINVAL)
			fail("tamalloc(%#lx, %#lx) = %s, want EINVAL", size, flags, errname(e));
		else if (!einval && e != ENOMEM)
			fail("tamalloc(%#lx, %#lx) = %s, want ENOMEM or success",
			     size, flags, errname(e));
		else if (must_succeed)
			fail("tamalloc(%#lx, %#lx) = %s, want success", size, flags, errname(e));
		return;
	}
	if (einval || enomem) {
		fail("tamalloc(%#lx, %#lx) = %#lx, want %s", size, flags,
		     (unsigned long)ret, einval ? "EINVAL" : "ENOMEM");
	} else if ((unsigned long)ret & (PAGE - 1)) {
		fail("tamalloc(%#lx, %#lx) = %#lx: not page aligned", size, flags,
		     (unsigned long)ret);
	} else if ((flags & TAMALLOC_HUGE) && ((unsigned long)ret & (PMD - 1))) {
		fail("tamalloc(%#lx, HUGE) = %#lx: not 2 MiB aligned", size,
		     (unsigned long)ret);
	} else if ((unsigned long)ret + len > USER_TOP) {
		fail("tamalloc(%#lx) = %#lx: beyond user space", size, (unsigned long)ret);
	} else if (len <= 64 * PAGE) {
		volatile unsigned char *p = (unsigned char *)ret;

		if (p[0] || p[size - 1])
			fail("tamalloc(%#lx) = %#lx: does not read zero", size,
			     (unsigned long)ret);
		p[0] = 1;
		p[size - 1] = 1;
	}
	if (!einval && !enomem && munmap((void *)ret, len))
		fail("munmap(tamalloc(%#lx) = %#lx, %#lx): %s", size, (unsigned long)ret,
		     len, strerror(errno));
}

/* A record of ours: our pid and the process's (leader's) name, exact sums. */
static void check_ours(const unsigned char *rec, const struct pidarg *a)
{
	struct tamalloc_mem_stats st;

	/* The caller's record may be only VER0 long, at the end of a page. */
	memcpy(&st, rec, MEM_VER0);
	if (st.pid != self)
		fail("get_mem_stats(%d) [ours]: pid %d, want %d", a->pid, st.pid, self);
	if (strncmp(st.comm, self_comm, sizeof(st.comm)))
		fail("get_mem_stats(%d) [%s]: comm \"%.16s\", want the process's \"%s\"",
		     a->pid, a->pid == self ? "own pid" : "thread id", st.comm, self_comm);
	if (!st.reserved_kb || !st.committed_kb)
		fail("get_mem_stats(%d) [ours]: zero memory", a->pid);
}

static void fuzz_mem(void)
{
	struct pidarg a = pick_pid();
	unsigned int size = pick_size(MEM_VER0);
	unsigned int cnt = pick_count();
	unsigned long flags = pick_flags();
	unsigned long raw_size = size, raw_count = cnt;
	struct buf b;
	size_t window, need;
	int einval, e;
	long ret, i;

	if (chance(5))
		raw_size |= rnd() << 32;
	if (chance(5))
		raw_count |= rnd() << 32;
	/* pid == 0 and a buffer: usually room for every process */
	if (!a.pid && chance(50))
		cnt = (unsigned int)below(2048) + 256, raw_count = cnt;
	b = pick_buffer((size_t)size * (a.pid ? 1 : 4));
	window = poison(&b);

	ret = sys_get_mem_stats(a.raw, b.p, raw_size, raw_count, flags);
	e = errno;
	count(C_MEM, ret);

	einval = (unsigned int)flags || a.pid < 0 || size < MEM_VER0 ||
		 size > MAX_RECORD_SIZE || (b.p && !cnt);
	if (einval) {
		if (ret >= 0 || e != EINVAL)
			fail("get_mem_stats(%d, %s, %u, %u, %#lx) = %ld/%s, want EINVAL",
			     a.pid, b.name, size, cnt, flags, ret, errname(ret < 0 ? e : 0));
		return;
	}

	if (ret < 0) {
		switch (e) {
		case ESRCH:
			if (!a.pid || a.exists == MUST_EXIST)
				fail("get_mem_stats(%d%s) = ESRCH", a.pid, a.ours ? ", ours" : "");
			return;
		case EFAULT:
			need = (size_t)size * (a.pid ? 1 : cnt);
			if (!b.p && !cnt)
				fail("get_mem_stats(%d, NULL, count 0) = EFAULT", a.pid);
			else if (b.writable >= need)
				fail("get_mem_stats(%d, %s, %u, %u) = EFAULT with %zu writable bytes",
				     a.pid, b.name, size, cnt, b.writable);
			return;
		case EOVERFLOW:
			if (a.pid || cnt >= (1u << 22))
				fail("get_mem_stats(%d, %s, %u, count %u) = EOVERFLOW",
				     a.pid, b.name, size, cnt);
			return;
		default:
			fail("get_mem_stats(%d, %s, %u, %u) = %s: not an allowed errno",
			     a.pid, b.name, size, cnt, errname(e));
			return;
		}
	}

	if (a.exists == MUST_NOT_EXIST) {
		fail("get_mem_stats(%d) = %ld: that pid cannot exist", a.pid, ret);
		return;
	}
	if (!b.p && !cnt) {		/* count only */
		if (ret < 1 || (a.pid && ret != 1))
			fail("get_mem_stats(%d, NULL, 0) = %ld", a.pid, ret);
		return;
	}
	if (ret < 1 || ret > cnt || (a.pid && ret != 1)) {
		fail("get_mem_stats(%d, %s, %u, %u) = %ld records", a.pid, b.name, size, cnt, ret);
		return;
	}
	if ((size_t)ret * size > b.writable) {
		fail("get_mem_stats(%d, %s) = %ld records of %u with %zu writable bytes",
		     a.pid, b.name, ret, size, b.writable);
		return;
	}
	for (i = 0; i < ret; i++) {
		const unsigned char *rec = b.p + (size_t)i * size;
		const char *why = check_mem_record(rec, size, a.ours ? 0 : RSS_SLACK_KB);
		int pid = (int)rd32(rec);

		if (why) {
			fail("get_mem_stats(%d) record %ld (pid %d): %s", a.pid, i, pid, why);
			return;
		}
		if (i && pid <= (int)rd32(rec - size)) {
			fail("get_mem_stats(0): pid %d after %d, not increasing", pid,
			     (int)rd32(rec - size));
			return;
		}
	}
	if (a.ours)
		check_ours(b.p, &a);
	else if (a.pid && a.pid == zombie && (int)rd32(b.p) != zombie)
		fail("get_mem_stats(zombie %d): record of pid %d", zombie, (int)rd32(b.p));
	if (!untouched_after(&b, (size_t)ret * size, window))
		fail("get_mem_stats(%d, %s, %u, %u) = %ld wrote past its records",
		     a.pid, b.name, size, cnt, ret);
}

static void fuzz_total(void)
{
	unsigned int size = pick_size(TOTAL_VER0);
	unsigned long flags = pick_flags(), raw_size = size;
	struct buf b = pick_buffer(size);
	size_t window = poison(&b);
	const char *why;
	long ret;
	int e;

	if (chance(5))
		raw_size |= rnd() << 32;
	ret = sys_get_total_mem_stats(b.p, raw_size, flags);
	e = errno;
	count(C_TOTAL, ret);

	if ((unsigned int)flags || size < TOTAL_VER0 || size > MAX_RECORD_SIZE) {
		if (ret >= 0 || e != EINVAL)
			fail("get_total_mem_stats(%s, %u, %#lx) = %ld/%s, want EINVAL",
			     b.name, size, flags, ret, errname(ret < 0 ? e : 0));
		return;
	}
	if (ret < 0) {
		if (e != EFAULT)
			fail("get_total_mem_stats(%s, %u) = %s", b.name, size, errname(e));
		else if (b.writable >= size)
			fail("get_total_mem_stats(%s, %u) = EFAULT with %zu writable bytes",
			     b.name, size, b.writable);
		return;
	}
	if (ret != 0 || b.writable < size) {
		fail("get_total_mem_stats(%s, %u) = %ld with %zu writable bytes",
		     b.name, size, ret, b.writable);
		return;
	}
	why = check_total_record(b.p, size);
	if (why)
		fail("get_total_mem_stats(%u): %s", size, why);
	if (!untouched_after(&b, size, window))
		fail("get_total_mem_stats(%u) wrote past its record", size);
}

/* ---- helpers: threads with their own ids, children that come and go ------ */

static void *helper(void *arg)
{
	pid_t *slot = arg;

	prctl(PR_SET_NAME, "fz-thread", 0, 0, 0);
	__atomic_store_n(slot, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	for (;;)
		pause();
	return NULL;
}

static int read_int(const char *path)
{
	FILE *f = fopen(path, "r");
	int v = 0;

	if (!f || fscanf(f, "%d", &v) != 1) {
		fprintf(stderr, "cannot read %s\n", path);
		exit(2);
	}
	fclose(f);
	return v;
}

/* The zombie of last round is reaped (its pid now "reaped"); a new zombie. */
static void churn_child(void)
{
	int max = read_int("/proc/sys/kernel/pid_max");
	pid_t pid;

	/* pids at or above the largest pid_max seen cannot exist */
	if (max > pid_max)
		pid_max = max;
	if (zombie > 0) {
		if (waitpid(zombie, NULL, 0) != zombie) {
			perror("waitpid");
			exit(2);
		}
		reaped = zombie;
	}
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(2);
	}
	if (!pid)
		_exit(0);
	children++;
	zombie = pid;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void print_histogram(void)
{
	int c, e;

	for (c = 0; c < NR_CALLS; c++) {
		unsigned long total = 0;

		for (e = 0; e < 256; e++)
			total += hist[c][e];
		printf("  %-20s %8lu calls:", call_name[c], total);
		for (e = 0; e < 256; e++)
			if (hist[c][e])
				printf(" %s %lu", e == 255 ? ">255" :
				       (e && !strcmp(errname(e), "other") ?
					strerror(e) : errname(e)), hist[c][e]);
		putchar('\n');
	}
}

/* What a worker hands back to the parent, through a shared mapping. */
struct result {
	unsigned long hist[NR_CALLS][256];
	unsigned long ncalls, invalid, children;
	unsigned int mem_ksize, total_ksize;
	int done;
};

/* One worker: its own helper threads, buffers, zombie; calls of its own. */
static int worker(unsigned long calls, struct result *res)
{
	pthread_t th[NR_HELPERS];
	unsigned long i;

	self = getpid();
	pid_max = read_int("/proc/sys/kernel/pid_max");
	prctl(PR_GET_NAME, self_comm, 0, 0, 0);
	for (i = 0; i < NR_HELPERS; i++) {
		if (pthread_create(&th[i], NULL, helper, &tids[i])) {
			fprintf(stderr, "pthread_create failed\n");
			return 2;
		}
		while (!__atomic_load_n(&tids[i], __ATOMIC_ACQUIRE))
			sched_yield();
	}
	setup_buffers();

	for (i = 0; i < calls; i++) {
		if (i % 500 == 0)
			churn_child();
		switch (below(10)) {
		case 0: case 1:
			fuzz_tamalloc();
			break;
		case 2: case 3:
			fuzz_total();
			break;
		default:
			fuzz_mem();
			break;
		}
	}
	if (zombie > 0)
		waitpid(zombie, NULL, 0);
	print_kinds();
	fflush(stdout);
	memcpy(res->hist, hist, sizeof(hist));
	res->ncalls = ncalls;
	res->invalid = invalid;
	res->children = children;
	res->mem_ksize = seen_mem_ksize;
	res->total_ksize = seen_total_ksize;
	res->done = 1;
	return invalid ? 1 : 0;
}

int main(int argc, char **argv)
{
	unsigned long calls = 20000, mine;
	unsigned int mem_ksize = 0, total_ksize = 0;
	struct result *res;
	int jobs = 1, opt, j, c, e, failed = 0;
	uint64_t seed;
	double start, secs;

	rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	while ((opt = getopt(argc, argv, "n:s:j:")) != -1) {
		switch (opt) {
		case 'n': calls = strtoul(optarg, NULL, 0); break;
		case 's': rng = strtoull(optarg, NULL, 0); break;
		case 'j': jobs = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-n CALLS] [-s SEED] [-j WORKERS]\n", argv[0]);
			return 2;
		}
	}
	if (jobs < 1 || jobs > 64)
		jobs = 1;
	if (!rng)
		rng = 1;
	seed = rng;
	printf("fuzz_syscalls: seed %#llx, %lu calls, %d worker process%s\n",
	       (unsigned long long)seed, calls, jobs, jobs > 1 ? "es" : "");
	fflush(stdout);

	/* Present at all?  NULL/0/0 is EINVAL on the patched kernel, else ENOSYS. */
	if (sys_get_total_mem_stats(NULL, 0, 0) != -1 || errno != EINVAL) {
		printf("fuzz_syscalls: the tamalloc system calls are missing (%s)\n",
		       strerror(errno));
		return 2;
	}
	res = mmap(NULL, jobs * sizeof(*res), PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED) {
		perror("mmap");
		return 2;
	}

	/* Worker j runs seed + j: rerun one with -s SEED+j -n ITS_CALLS. */
	start = now();
	for (j = 0; j < jobs; j++) {
		pid_t pid;

		mine = calls / jobs + ((unsigned long)j < calls % jobs);
		pid = fork();
		if (pid < 0) {
			perror("fork");
			return 2;
		}
		if (!pid) {
			rng = seed + (uint64_t)j;
			if (!rng)
				rng = 1;
			_exit(worker(mine, &res[j]));
		}
	}
	for (j = 0; j < jobs; j++) {
		int status;

		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) > 1)
			failed = 1;	/* a crashed worker or a setup error */
	}
	secs = now() - start;

	for (j = 0; j < jobs; j++) {
		if (!res[j].done) {
			printf("fuzz_syscalls: worker %d did not finish\n", j);
			failed = 1;
			continue;
		}
		for (c = 0; c < NR_CALLS; c++)
			for (e = 0; e < 256; e++)
				hist[c][e] += res[j].hist[c][e];
		ncalls += res[j].ncalls;
		invalid += res[j].invalid;
		children += res[j].children;
		if (res[j].mem_ksize > mem_ksize)
			mem_ksize = res[j].mem_ksize;
		if (res[j].total_ksize > total_ksize)
			total_ksize = res[j].total_ksize;
	}
	printf("fuzz_syscalls: %lu calls in %.1f s, %.0f calls/s, %lu children forked, "
	       "record size %u/%u (0: VER0 kernel), %lu invalid\n",
	       ncalls, secs, ncalls / (secs > 0 ? secs : 1), children,
	       mem_ksize, total_ksize, invalid);
	print_histogram();
	failed |= invalid > 0 || ncalls != calls;
	printf("fuzz_syscalls: %s\n", failed ? "FAILED" : "OK");
	return failed ? 1 : 0;
}
