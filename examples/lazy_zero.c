// SPDX-License-Identifier: GPL-2.0
/*
 * lazy_zero - show that tamalloc() memory is lazily zero-filled.
 *
 * Allocates a buffer (10 MiB by default) with the tamalloc system call,
 * then walks it byte by byte: each byte must read 0 at its first access,
 * and a letter is written into it.  Progress is printed per MiB, and the
 * process's VmRSS (from /proc/self/status) before and after, so that one
 * can see physical memory appear only as pages are touched.  With -p the
 * program waits for Enter at each step so that another terminal can watch
 * /proc/PID/status or /proc/mem_watch.  A second pass checks that every
 * byte kept the letter written to it.
 *
 * Build (against the uapi headers of the patched kernel):
 *   gcc -Wall -Wextra -Werror -I$HOME/.cache/tamalloc/headers/include \
 *       lazy_zero.c -o lazy_zero
 *
 * Exit status: 0 success, 1 a byte was not zero or lost its letter,
 * 2 usage error, 3 tamalloc() failed, 4 tamalloc() is not available
 * on this kernel (ENOSYS: the test is skipped).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <asm/unistd.h>
#include <linux/tamalloc.h>

#ifndef __NR_tamalloc
#define __NR_tamalloc 548	/* x86_64, see docs/abi.md */
#endif

#define MIB (1024UL * 1024UL)

enum {
	EXIT_NOT_ZERO = 1,
	EXIT_USAGE = 2,
	EXIT_TAMALLOC = 3,
	EXIT_ENOSYS = 4,
};

static void print_help(FILE *out, const char *prog)
{
	fprintf(out,
		"usage: %s [-s SIZE] [-H] [-p] [-d MS]\n"
		"  -s SIZE  bytes to allocate, with an optional K, M or G suffix\n"
		"           (powers of 1024); default 10M\n"
		"  -H       pass TAMALLOC_HUGE (2 MiB aligned, transparent huge pages)\n"
		"  -p       pause for Enter before allocating, before touching and at the end\n"
		"  -d MS    sleep MS milliseconds after each MiB checked\n"
		"exit status: 0 ok, 1 a byte was not zero, 2 usage, 3 tamalloc failed,\n"
		"             4 no tamalloc system call on this kernel (ENOSYS)\n",
		prog);
}

/* "10M" -> 10485760; 0 on a malformed or zero size. */
static size_t parse_size(const char *s)
{
	unsigned long long n, mult = 1;
	char *end;

	if (*s < '0' || *s > '9')
		return 0;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno)
		return 0;
	switch (*end) {
	case 'k': case 'K':
		mult = 1ULL << 10;
		end++;
		break;
	case 'm': case 'M':
		mult = 1ULL << 20;
		end++;
		break;
	case 'g': case 'G':
		mult = 1ULL << 30;
		end++;
		break;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B' && mult == 1)
		end++;
	if (*end || n == 0 || n > SIZE_MAX / mult)
		return 0;
	return (size_t)(n * mult);
}

/* VmRSS of this process in kB, or -1. */
static long vm_rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

static void print_rss(const char *when, long base)
{
	long kb = vm_rss_kb();

	if (kb < 0)
		printf("VmRSS %s: unknown\n", when);
	else if (base < 0)
		printf("VmRSS %s: %ld kB\n", when, kb);
	else
		printf("VmRSS %s: %ld kB (%+ld kB)\n", when, kb, kb - base);
	fflush(stdout);
}

static void pause_for_enter(const char *what)
{
	int c;

	printf("[%d] press Enter to %s (watch: grep VmRSS /proc/%d/status)\n",
	       (int)getpid(), what, (int)getpid());
	fflush(stdout);
	do {
		c = getchar();
	} while (c != '\n' && c != EOF);
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* xorshift32: the letters written, reproducible for the second pass. */
static unsigned int next_random(unsigned int *state)
{
	unsigned int x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*state = x;
	return x;
}

int main(int argc, char **argv)
{
	size_t size = 10 * MIB, i;
	unsigned long flags = 0;
	unsigned int delay_ms = 0;
	unsigned char *buf;
	unsigned int seed, state;
	long ret, rss_before;
	int pause = 0, opt;

	while ((opt = getopt(argc, argv, "s:Hpd:h")) != -1) {
		switch (opt) {
		case 's':
			size = parse_size(optarg);
			if (!size) {
				fprintf(stderr, "%s: bad size '%s'\n", argv[0], optarg);
				return EXIT_USAGE;
			}
			break;
		case 'H':
			flags |= TAMALLOC_HUGE;
			break;
		case 'p':
			pause = 1;
			break;
		case 'd':
			delay_ms = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		case 'h':
			print_help(stdout, argv[0]);
			return 0;
		default:
			print_help(stderr, argv[0]);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		print_help(stderr, argv[0]);
		return EXIT_USAGE;
	}

	printf("lazy_zero: pid %d, %zu bytes (%.2f MiB), flags 0x%lx\n",
	       (int)getpid(), size, (double)size / MIB, flags);
	rss_before = vm_rss_kb();
	print_rss("before tamalloc", -1);
	if (pause)
		pause_for_enter("call tamalloc()");

	ret = syscall(__NR_tamalloc, (unsigned long)size, flags);
	if (ret == -1) {
		if (errno == ENOSYS) {
			printf("SKIP: no tamalloc system call on this kernel (ENOSYS);\n"
			       "boot the patched kernel, e.g. with make vm-run\n");
			return EXIT_ENOSYS;
		}
		fprintf(stderr, "lazy_zero: tamalloc(%zu, 0x%lx) failed: %s\n",
			size, flags, strerror(errno));
		return EXIT_TAMALLOC;
	}
	buf = (unsigned char *)ret;
	printf("tamalloc(%zu, 0x%lx) = %p\n", size, flags, (void *)buf);
	print_rss("after tamalloc", rss_before);
	if (pause)
		pause_for_enter("read and write the buffer byte by byte");

	seed = (unsigned int)time(NULL) ^ ((unsigned int)getpid() << 16) ^ 0x9e3779b9u;
	if (!seed)
		seed = 1;
	state = seed;
	for (i = 0; i < size; i++) {
		unsigned char c = buf[i];	/* first access to this byte */

		if (c != 0) {
			printf("FAIL: byte %zu (%p) read 0x%02x, not 0, at first access\n",
			       i, (void *)(buf + i), c);
			return EXIT_NOT_ZERO;
		}
		buf[i] = 'A' + next_random(&state) % 26;
		if ((i + 1) % MIB == 0) {
			printf("checked %zu MiB\n", (i + 1) / MIB);
			fflush(stdout);
			if (delay_ms)
				sleep_ms(delay_ms);
		}
	}
	if (size % MIB)
		printf("checked %zu bytes\n", size);
	print_rss("after touching", rss_before);

	/* Make the compiler forget what it wrote: really read it back. */
	__asm__ __volatile__("" : : "r"(buf) : "memory");
	state = seed;
	for (i = 0; i < size; i++) {
		unsigned char want = 'A' + next_random(&state) % 26;

		if (buf[i] != want) {
			printf("FAIL: byte %zu holds 0x%02x, not the letter '%c' written\n",
			       i, buf[i], want);
			return EXIT_NOT_ZERO;
		}
	}
	printf("OK: all %zu bytes read 0 at first access and kept their letter\n",
	       size);
	fflush(stdout);
	if (pause)
		pause_for_enter("free the buffer and exit");

	if (munmap((void *)buf, size)) {
		fprintf(stderr, "lazy_zero: munmap: %s\n", strerror(errno));
		return EXIT_TAMALLOC;
	}
	print_rss("after munmap", rss_before);
	return 0;
}
