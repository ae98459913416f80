/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The record the task iterator (memstats.bpf.c) writes, one per process, read by
 * tamalloc/backends/bpf.py (its struct format must match: test_bpf_backend.py checks
 * the size).  Fixed size, no pointers, little-endian as the host; every count is as the
 * kernel keeps it (pages, bytes for page tables) and user space converts to kB.
 */
#ifndef TAMALLOC_BPF_MEMSTATS_H
#define TAMALLOC_BPF_MEMSTATS_H

/* flags */
#define TAM_BPF_THREAD		0x01	/* a live thread of a process whose leader has no mm */
#define TAM_BPF_NO_MM		0x02	/* a leader without mm: a zombie leader or exiting */
#define TAM_BPF_OOM_SKIP	0x04	/* MMF_OOM_SKIP: the OOM reaper is done with the mm */
#define TAM_BPF_OOM_ORIGIN	0x08	/* signal->oom_flag_origin (swapoff, KSM unmerge) */
#define TAM_BPF_VFORK		0x10	/* in_vfork(): shares its parent's mm until exec */
#define TAM_BPF_EXITING		0x20	/* task_will_free_mem(): exiting as a whole */
#define TAM_BPF_OOM_VICTIM	0x40	/* signal->oom_mm set: chosen by an OOM kill */
#define TAM_BPF_GLOBAL_INIT	0x80	/* the init pid namespace's pid 1 */
#define TAM_BPF_NO_PGTABLES	0x100	/* the kernel has no mm->pgtables_bytes */

#define TAM_BPF_COMM_LEN	16

struct tam_bpf_rec {
	__u32 pid;		/* the tgid as the reader's pid namespace numbers it */
	__u32 flags;		/* TAM_BPF_* */
	__s32 oom_score_adj;
	__u32 pad;
	char comm[TAM_BPF_COMM_LEN];	/* the leader's comm, raw bytes */
	__u64 total_vm;		/* pages */
	__u64 anon;		/* pages, MM_ANONPAGES, negative read as 0 */
	__u64 file;		/* pages, MM_FILEPAGES */
	__u64 shmem;		/* pages, MM_SHMEMPAGES */
	__u64 swap;		/* pages, MM_SWAPENTS */
	__u64 pgtables;		/* bytes, mm->pgtables_bytes */
	__u64 cgroup_id;	/* the cgroup v2 id (kernfs id) of the leader */
};

#endif
