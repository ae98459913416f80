/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by the robustness campaign's C programs (tests/stress/): the raw
 * system calls and the self-consistency checks of the records they return.
 *
 * Built in the guest with gcc -Wall -Wextra -Werror against the installed
 * uapi header linux/tamalloc.h.  Fields whose name changes between ABI
 * revisions (the u32 at offset 12 of a process record and at offset 60 of
 * the totals record: "__reserved", later "size") are read by offset, so
 * that the same source builds against either header.
 */
#ifndef STRESS_COMMON_H
#define STRESS_COMMON_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/tamalloc.h>

#define NR_TAMALLOC		548
#define NR_GET_MEM_STATS	549
#define NR_GET_TOTAL_MEM_STATS	550
#define MAX_RECORD_SIZE		4096u

#define MEM_VER0	TAMALLOC_MEM_STATS_SIZE_VER0
#define TOTAL_VER0	TAMALLOC_TOTAL_MEM_STATS_SIZE_VER0
#define MEM_SIZE_OFF	12	/* __reserved (VER0) / size */
#define TOTAL_SIZE_OFF	60	/* __reserved (VER0) / size */
#define TOTAL_HIDDEN_OFF 64	/* some_hidden, when the kernel has it */

/*
 * Invalid results, by kind (the format string of the check that failed):
 * the first MAX_EXAMPLES of each kind are printed, every kind is counted and
 * print_kinds() lists the counts at the end.  Thread-safe: the storm's
 * scanner threads report concurrently.
 */
#define MAX_KINDS	64
#define MAX_EXAMPLES	3
static struct { const char *fmt; unsigned long n; } kinds[MAX_KINDS];
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long invalid;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
	va_list ap;
	int k, print = 1;

	pthread_mutex_lock(&fail_lock);
	invalid++;
	for (k = 0; k < MAX_KINDS && kinds[k].fmt && kinds[k].fmt != fmt; k++)
		;
	if (k < MAX_KINDS) {
		kinds[k].fmt = fmt;
		print = ++kinds[k].n <= MAX_EXAMPLES;
	}
	if (print) {
		va_start(ap, fmt);
		fputs("INVALID: ", stdout);
		vprintf(fmt, ap);
		fputc('\n', stdout);
		va_end(ap);
		fflush(stdout);
	}
	pthread_mutex_unlock(&fail_lock);
}

static void print_kinds(void)
{
	int k;

	for (k = 0; k < MAX_KINDS && kinds[k].fmt; k++)
		printf("  invalid %6lu x  %s\n", kinds[k].n, kinds[k].fmt);
}

/*
 * committed_kb <= reserved_kb is checked with this slack for other
 * processes: 6.1 batches RSS counter updates per thread (SPLIT_RSS_COUNTING,
 * 64 events), and total_vm and the counters are read one after the other
 * while the process may munmap in between.  Exact for a quiescent process.
 */
#define RSS_SLACK_KB	(64u * 4u * 64u)

static inline long sys_tamalloc(unsigned long size, unsigned long flags)
{
	return syscall(NR_TAMALLOC, size, flags);
}

static inline long sys_get_mem_stats(long pid, void *buf, unsigned long size,
				     unsigned long count, unsigned long flags)
{
	return syscall(NR_GET_MEM_STATS, pid, buf, size, count, flags);
}

static inline long sys_get_total_mem_stats(void *buf, unsigned long size,
					   unsigned long flags)
{
	return syscall(NR_GET_TOTAL_MEM_STATS, buf, size, flags);
}

static inline uint32_t rd32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint64_t rd64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* The largest record size the kernel has reported (0: it reports none). */
static unsigned int seen_mem_ksize, seen_total_ksize;

static inline int all_zero(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/*
 * One process record of usize bytes.  Returns NULL if self-consistent, else
 * what is wrong.  slack_kb: allowed excess of committed over reserved.
 */
static inline const char *check_mem_record(const unsigned char *rec,
					   unsigned int usize,
					   unsigned int slack_kb)
{
	struct tamalloc_mem_stats st;
	uint32_t ksize = rd32(rec + MEM_SIZE_OFF);
	unsigned int tail_from;

	memcpy(&st, rec, sizeof(st) < usize ? sizeof(st) : usize);
	if (st.pid <= 0)
		return "pid <= 0";
	if (st.committed_kb != st.anon_kb + st.file_kb + st.shmem_kb)
		return "committed_kb != anon_kb + file_kb + shmem_kb";
	if (st.reserved_kb && st.committed_kb > st.reserved_kb + slack_kb)
		return "committed_kb > reserved_kb";
	if (!memchr(st.comm, 0, sizeof(st.comm)))
		return "comm not NUL-terminated";
	if (st.oom_score < 0 || st.oom_score > 2000)
		return "oom_score outside 0..2000";
	if (st.oom_score_adj < -1000 || st.oom_score_adj > 1000)
		return "oom_score_adj outside -1000..1000";
	if (st.reserved_kb > (1ull << 47) >> 10)
		return "reserved_kb beyond the address space";
	/*
	 * 0: VER0 __reserved; else the kernel's record size (its own, or the
	 * smaller of its own and the caller's, as sched_getattr() writes it).
	 */
	if (ksize && (ksize < MEM_VER0 || ksize > MAX_RECORD_SIZE))
		return "record size field out of range";
	if (ksize > seen_mem_ksize)
		seen_mem_ksize = ksize;
	if (ksize >= TAMALLOC_MEM_STATS_SIZE_VER1 &&
	    usize >= TAMALLOC_MEM_STATS_SIZE_VER1) {
		if (st.oom_flags & ~(uint32_t)(TAMALLOC_OOM_UNKILLABLE |
					       TAMALLOC_OOM_VICTIM |
					       TAMALLOC_OOM_ORIGIN |
					       TAMALLOC_OOM_EXITING))
			return "unknown oom_flags bit";
		if (st.__pad)
			return "pad not zero";
		/* Not the converse: vfork() parents are unkillable too. */
		if (st.oom_score_adj == -1000 &&
		    !(st.oom_flags & TAMALLOC_OOM_UNKILLABLE))
			return "oom_score_adj -1000 but not TAMALLOC_OOM_UNKILLABLE";
	}
	tail_from = ksize ? ksize : MEM_VER0;
	if (usize > tail_from && !all_zero(rec + tail_from, usize - tail_from))
		return "bytes beyond the kernel's record not zeroed";
	return NULL;
}

static inline const char *check_total_record(const unsigned char *rec,
					     unsigned int usize)
{
	struct tamalloc_total_mem_stats t;
	uint32_t ksize = rd32(rec + TOTAL_SIZE_OFF);
	unsigned int tail_from;

	memcpy(&t, rec, TOTAL_VER0);
	if (!t.processes)
		return "processes == 0 (the caller itself is a process)";
	if (t.committed_kb > t.reserved_kb + t.processes * RSS_SLACK_KB)
		return "committed_kb > reserved_kb";
	if (!t.commit_limit_kb || !t.mem_total_kb || !t.committed_as_kb)
		return "a commit figure is zero";
	if (t.overcommit_memory > 2)
		return "overcommit_memory not 0, 1 or 2";
	if (ksize && (ksize < TOTAL_VER0 || ksize > MAX_RECORD_SIZE))
		return "totals size field out of range";
	if (ksize > seen_total_ksize)
		seen_total_ksize = ksize;
	if (ksize >= TOTAL_HIDDEN_OFF + 8 && usize >= TOTAL_HIDDEN_OFF + 8 &&
	    rd64(rec + TOTAL_HIDDEN_OFF) > 1)
		return "some_hidden neither 0 nor 1";
	tail_from = ksize ? ksize : TOTAL_VER0;
	if (usize > tail_from && !all_zero(rec + tail_from, usize - tail_from))
		return "bytes beyond the kernel's totals not zeroed";
	return NULL;
}

/* The errno names the campaign can meet. */
static inline const char *errname(int e)
{
	switch (e) {
	case 0: return "ok";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case EINVAL: return "EINVAL";
	case EAGAIN: return "EAGAIN";
	case ENOSYS: return "ENOSYS";
	case EOVERFLOW: return "EOVERFLOW";
	case ENODEV: return "ENODEV";
	default: return "other";
	}
}

#endif /* STRESS_COMMON_H */
