/*
 * A process group for the footprint host test and benchmark (static build).
 *
 *   footprint_group FILE ANON_PAGES
 *
 * The parent maps: private anonymous memory (ANON_PAGES pages, written),
 * shared anonymous memory (32 pages, written), FILE privately (32 pages:
 * 16 read, 8 written = COW copies) and shared (8 written, 8 read), 8 pages
 * of anonymous memory only read (the zero page) and a 4 MiB aligned
 * MADV_HUGEPAGE region (written: THP where the kernel gives it).  Then it
 * forks four children: 0 writes half the private pages (COW breaks) and
 * reads the shared ones; 1 only reads; 2 writes the shared anonymous pages
 * and one page of the huge region (the PMD splits, the folio stays partly
 * shared); 3, the "outsider", reads the shared anonymous and file pages.
 * When every process is ready the parent prints
 * "PARENT CHILD0 CHILD1 CHILD2 OUTSIDER\n" on stdout; all then sleep until
 * killed.  Static, so it shares no library pages with the reader.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#define HUGE_BYTES (4UL << 20)

static volatile unsigned char sink;

static void touch(unsigned char *p, long first, long n, long page, int write)
{
	for (long i = first; i < first + n; i++) {
		if (write)
			p[i * page] = (unsigned char)(i + 1);
		else
			sink += p[i * page];
	}
}

static void *map(size_t size, int prot, int flags, int fd)
{
	void *p = mmap(NULL, size, prot, flags, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	return p;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s FILE ANON_PAGES\n", argv[0]);
		return 2;
	}
	long page = sysconf(_SC_PAGESIZE);
	long anon_pages = atol(argv[2]);
	int fd = open(argv[1], O_RDWR);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	int rw = PROT_READ | PROT_WRITE;
	unsigned char *anon = map(anon_pages * page, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	unsigned char *shared = map(32 * page, rw, MAP_SHARED | MAP_ANONYMOUS, -1);
	unsigned char *fpriv = map(32 * page, rw, MAP_PRIVATE, fd);
	unsigned char *fshared = map(32 * page, rw, MAP_SHARED, fd);
	unsigned char *zero = map(8 * page, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	unsigned char *raw = map(2 * HUGE_BYTES, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	unsigned char *huge = (unsigned char *)(((unsigned long)raw + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1));
	madvise(huge, HUGE_BYTES, MADV_HUGEPAGE);

	touch(anon, 0, anon_pages, page, 1);
	touch(shared, 0, 32, page, 1);
	touch(fpriv, 0, 16, page, 0);
	touch(fpriv, 16, 8, page, 1);
	touch(fshared, 0, 8, page, 1);
	touch(fshared, 8, 8, page, 0);
	touch(zero, 0, 8, page, 0);
	touch(huge, 0, HUGE_BYTES / page, page, 1);

	int ready[2];
	if (pipe(ready))
		return 1;
	pid_t pids[4];
	for (int c = 0; c < 4; c++) {
		pids[c] = fork();
		if (pids[c] < 0)
			return 1;
		if (pids[c] == 0) {
			switch (c) {
			case 0:
				touch(anon, 0, anon_pages / 2, page, 1);
				touch(shared, 0, 32, page, 0);
				break;
			case 1:
				touch(anon, 0, anon_pages, page, 0);
				touch(shared, 0, 32, page, 0);
				touch(fpriv, 0, 24, page, 0);
				touch(fshared, 0, 16, page, 0);
				break;
			case 2:
				touch(shared, 0, 32, page, 1);
				touch(huge, 3, 1, page, 1);
				break;
			case 3:
				touch(shared, 0, 16, page, 0);
				touch(fshared, 0, 16, page, 0);
				touch(fpriv, 0, 8, page, 0);
				break;
			}
			if (write(ready[1], "r", 1) != 1)
				return 1;
			for (;;)
				pause();
		}
	}
	char buf;
	for (int c = 0; c < 4; c++)
		if (read(ready[0], &buf, 1) != 1)
			return 1;
	printf("%d %d %d %d %d\n", getpid(), pids[0], pids[1], pids[2], pids[3]);
	fflush(stdout);
	for (;;)
		pause();
}
