// SPDX-License-Identifier: GPL-2.0
/*
 * A small member process of the OOM walk scenarios (tests/oom/test_oom_walk.py):
 * small enough that three of them fit a memory.max of a few MiB, where one unit of
 * oom_score_adj is worth one page and exact ties are easy to make.
 *
 *   walk_member SIZE [clone]
 *
 * It first maps, touches and unmaps SIZE bytes once, so that every page of its code
 * is resident before the test moves it into a cgroup (nothing it faults in later is
 * a file page charged there, which reclaim could take back and so change its rss).
 * It prints "started PID" and waits for a line on stdin; meanwhile the test moves it.
 * Then it maps and touches SIZE bytes (charged to its cgroup now), and with "clone"
 * starts a process that shares its memory (clone(CLONE_VM) without CLONE_THREAD, and
 * CLONE_PARENT so that the test is its parent and can wait for it). It prints
 * "ready PID CHILD" (CHILD 0 without clone) and sleeps until stdin closes.
 *
 * The clone child runs on its own stack in the shared memory and only makes raw
 * system calls: it shares the parent's thread pointer, so libc's per-thread state
 * (errno) is not its own.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CHILD_STACK (64 * 1024)

static void touch(char *p, size_t size)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t i;

	for (i = 0; i < size; i += (size_t)page)
		p[i] = 1;
}

static char *map(size_t size)
{
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	touch(p, size);
	return p;
}

static int child_main(void *arg)
{
	(void)arg;
	/* the test ends it (it is the test's child) when the OOM did not */
	for (;;)
		syscall(SYS_pause);
	return 0;
}

static void wait_line(void)
{
	char line[64];

	if (!fgets(line, sizeof(line), stdin))
		exit(0);
}

int main(int argc, char **argv)
{
	size_t size;
	char *stack;
	int child = 0;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s SIZE [clone]\n", argv[0]);
		return 2;
	}
	size = strtoul(argv[1], NULL, 0);
	munmap(map(size), size);
	munmap(map(CHILD_STACK), CHILD_STACK);
	printf("started %d\n", getpid());
	fflush(stdout);
	wait_line();
	map(size);
	if (argc == 3 && !strcmp(argv[2], "clone")) {
		stack = map(CHILD_STACK);
		child = clone(child_main, stack + CHILD_STACK,
			      CLONE_VM | CLONE_PARENT | SIGCHLD, NULL);
		if (child < 0) {
			perror("clone");
			return 1;
		}
	}
	printf("ready %d %d\n", getpid(), child);
	fflush(stdout);
	while (getchar() != EOF)
		;
	return 0;
}
