/*
 * ember-cpubench: user-space CPU work for Ember's bench/cpu.sh, the same static binary under
 * every VMM compared. Each workload is deterministic and prints its result, so two VMMs can
 * be checked to have done the same work.
 *   ember-cpubench gen BYTES        text-like data (words from a skewed vocabulary, lines of
 *                                   about 80 bytes) on stdout, for gzip and the checksums
 *   ember-cpubench run NAME CMD     runs `sh -c CMD` and prints "cpubench NAME <seconds>"
 *   ember-cpubench hash|sort|interp|matmul
 *                                   one built-in workload; prints
 *                                   "cpubench NAME <seconds> <checksum>"
 * Before a workload it prints "cpubench-start NAME", so that the host can also time it from
 * the arrival of the two lines, which does not depend on the guest's clock.
 * Built-in workloads (each about 0.1 s natively on the development host):
 *   hash    open-addressing hash table of 64-bit keys: 2^20 inserts, 2^21 lookups (random
 *           memory access, multiplies, unpredictable branches)
 *   sort    quicksort (median of three, insertion sort below 16) of 2^21 32-bit integers
 *   interp  a stack bytecode interpreter (switch dispatch) running a Collatz step count
 *   matmul  a 512x512 double-precision matrix product (SSE2), i-k-j order
 * Seconds are from CLOCK_MONOTONIC in the guest.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* splitmix64: the generator and the hash mixer of every workload. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t rng_state = 1;
static uint64_t rnd(void) { return mix(rng_state++); }

static void *alloc(size_t n)
{
    void *p = calloc(1, n);
    if (!p) {
        fprintf(stderr, "ember-cpubench: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- gen ------------------------------------------------------------------------- */

static int gen(uint64_t bytes)
{
    enum { WORDS = 512 };
    static char vocab[WORDS][12];
    for (int w = 0; w < WORDS; w++) {
        int len = 2 + rnd() % 9;
        for (int i = 0; i < len; i++)
            /* Two letters in three from the 8 commonest. */
            vocab[w][i] = "etaoinshrdlcumwfgypbvkjxqz"[rnd() % 3 ? rnd() % 8 : rnd() % 26];
        vocab[w][len] = 0;
    }
    static char buf[1 << 16];
    size_t used = 0, line = 0;
    while (bytes) {
        /* The smaller of two draws: common words are much more common. */
        uint64_t a = rnd() % WORDS, b = rnd() % WORDS;
        const char *word = vocab[a < b ? a : b];
        size_t len = strlen(word);
        char sep = line + len + 1 > 80 ? '\n' : ' ';
        line = sep == '\n' ? 0 : line + len + 1;
        if (used + len + 1 > sizeof buf) {
            fwrite(buf, 1, used, stdout);
            used = 0;
        }
        memcpy(buf + used, word, len);
        buf[used + len] = sep;
        used += len + 1;
        if (len + 1 >= bytes) {
            used -= len + 1 - bytes;
            bytes = 0;
        } else {
            bytes -= len + 1;
        }
    }
    fwrite(buf, 1, used, stdout);
    return fflush(stdout) != 0;
}

/* ---- run --------------------------------------------------------------------------- */

/* Says on stdout that the workload NAME starts, at once. */
static void starting(const char *name)
{
    printf("cpubench-start %s\n", name);
    fflush(stdout);
}

static int run(const char *name, const char *cmd)
{
    starting(name);
    double start = now();
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) {
        perror("ember-cpubench: run");
        return 1;
    }
    double secs = now() - start;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "ember-cpubench: %s failed\n", name);
        return 1;
    }
    printf("cpubench %s %.3f\n", name, secs);
    return 0;
}

/* ---- hash ------------------------------------------------------------------------ */

static uint64_t hash(void)
{
    const uint64_t bits = 21, size = 1ull << bits, mask = size - 1, inserts = 1 << 20;
    uint64_t *keys = alloc(size * sizeof *keys), *vals = alloc(size * sizeof *vals);
    for (uint64_t i = 0; i < inserts; i++) {
        uint64_t key = mix(i * 2 + 1) | 1; /* 0 marks an empty slot */
        uint64_t slot = mix(key) >> (64 - bits);
        while (keys[slot] && keys[slot] != key)
            slot = (slot + 1) & mask;
        keys[slot] = key;
        vals[slot] += i;
    }
    uint64_t sum = 0, hits = 0;
    for (uint64_t i = 0; i < 2 * inserts; i++) {
        /* Odd i were inserted (as i / 2), even ones mostly not. */
        uint64_t key = mix(i) | 1;
        uint64_t slot = mix(key) >> (64 - bits);
        while (keys[slot] && keys[slot] != key)
            slot = (slot + 1) & mask;
        if (keys[slot]) {
            hits++;
            sum += vals[slot];
        }
    }
    free(keys);
    free(vals);
    return sum * 31 + hits;
}

/* ---- sort ------------------------------------------------------------------------ */

static void insertion(uint32_t *a, long n)
{
    for (long i = 1; i < n; i++) {
        uint32_t v = a[i];
        long j = i;
        for (; j > 0 && a[j - 1] > v; j--)
            a[j] = a[j - 1];
        a[j] = v;
    }
}

static void quick(uint32_t *a, long n)
{
    while (n > 16) {
        uint32_t x = a[0], y = a[n / 2], z = a[n - 1];
        uint32_t pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        long i = 0, j = n - 1;
        for (;;) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i >= j)
                break;
            uint32_t t = a[i];
            a[i++] = a[j];
            a[j--] = t;
        }
        /* Recurse into the smaller side, loop on the larger. */
        if (j + 1 < n - j - 1) {
            quick(a, j + 1);
            a += j + 1;
            n -= j + 1;
        } else {
            quick(a + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    insertion(a, n);
}

static uint64_t sort(void)
{
    const long n = 1 << 21;
    uint32_t *a = alloc(n * sizeof *a);
    for (long i = 0; i < n; i++)
        a[i] = (uint32_t)rnd();
    quick(a, n);
    uint64_t sum = 0;
    for (long i = 0; i < n; i++) {
        if (i && a[i - 1] > a[i]) {
            fprintf(stderr, "ember-cpubench: not sorted at %ld\n", i);
            exit(1);
        }
        sum = sum * 1000003 + a[i];
    }
    free(a);
    return sum;
}

/* ---- interp ---------------------------------------------------------------------- */

enum op { PUSH, LOAD, STORE, ADD, MUL, SHR, AND, LT, EQ, JZ, JMP, HALT };
struct insn {
    enum op op;
    int64_t arg;
};

/* Runs a program on a small stack machine with 8 variables; returns variable 0. */
static int64_t vm(const struct insn *code)
{
    int64_t stack[64], var[8] = {0};
    int sp = 0;
    for (const struct insn *pc = code;; pc++) {
        switch (pc->op) {
        case PUSH: stack[sp++] = pc->arg; break;
        case LOAD: stack[sp++] = var[pc->arg]; break;
        case STORE: var[pc->arg] = stack[--sp]; break;
        case ADD: sp--; stack[sp - 1] += stack[sp]; break;
        case MUL: sp--; stack[sp - 1] *= stack[sp]; break;
        case SHR: sp--; stack[sp - 1] >>= stack[sp]; break;
        case AND: sp--; stack[sp - 1] &= stack[sp]; break;
        case LT: sp--; stack[sp - 1] = stack[sp - 1] < stack[sp]; break;
        case EQ: sp--; stack[sp - 1] = stack[sp - 1] == stack[sp]; break;
        case JZ: if (!stack[--sp]) pc = code + pc->arg - 1; break;
        case JMP: pc = code + pc->arg - 1; break;
        case HALT: return var[0];
        }
    }
}

static uint64_t interp(void)
{
    /* total = 0; for (n = 1; n < LIMIT; n++) for (x = n; x != 1; total++)
     *     x = x & 1 ? 3 * x + 1 : x >> 1;
     * Variables: 0 total, 1 n, 2 x. The numbers in comments are instruction indexes. */
    enum { LIMIT = 30000 };
    const struct insn program[] = {
        /* 0 */ {PUSH, 1}, {STORE, 1},
        /* 2 loop over n */ {LOAD, 1}, {PUSH, LIMIT}, {LT, 0}, {JZ, 38},
        /* 6 */ {LOAD, 1}, {STORE, 2},
        /* 8 loop over x */ {LOAD, 2}, {PUSH, 1}, {EQ, 0}, {JZ, 13}, {JMP, 33},
        /* 13 */ {LOAD, 2}, {PUSH, 1}, {AND, 0}, {JZ, 24},
        /* 17 odd */ {LOAD, 2}, {PUSH, 3}, {MUL, 0}, {PUSH, 1}, {ADD, 0}, {STORE, 2}, {JMP, 28},
        /* 24 even */ {LOAD, 2}, {PUSH, 1}, {SHR, 0}, {STORE, 2},
        /* 28 */ {LOAD, 0}, {PUSH, 1}, {ADD, 0}, {STORE, 0}, {JMP, 8},
        /* 33 next n */ {LOAD, 1}, {PUSH, 1}, {ADD, 0}, {STORE, 1}, {JMP, 2},
        /* 38 */ {HALT, 0},
    };
    uint64_t total = (uint64_t)vm(program), expect = 0;
    for (uint64_t n = 1; n < LIMIT; n++)
        for (uint64_t x = n; x != 1; expect++)
            x = x & 1 ? 3 * x + 1 : x >> 1;
    if (total != expect) {
        fprintf(stderr, "ember-cpubench: interp computed %llu, not %llu\n",
                (unsigned long long)total, (unsigned long long)expect);
        exit(1);
    }
    return total;
}

/* ---- matmul ---------------------------------------------------------------------- */

static uint64_t matmul(void)
{
    enum { N = 512 };
    double *a = alloc(sizeof(double) * N * N), *b = alloc(sizeof(double) * N * N),
           *c = alloc(sizeof(double) * N * N);
    for (int i = 0; i < N * N; i++) {
        a[i] = (double)(rnd() % 1000) / 64;
        b[i] = (double)(rnd() % 1000) / 64;
    }
    for (int i = 0; i < N; i++)
        for (int k = 0; k < N; k++) {
            double aik = a[i * N + k];
            for (int j = 0; j < N; j++)
                c[i * N + j] += aik * b[k * N + j];
        }
    double trace = 0;
    for (int i = 0; i < N; i++)
        trace += c[i * N + i] + c[i * N + (N - 1 - i)];
    free(a);
    free(b);
    free(c);
    return (uint64_t)trace;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        uint64_t (*fn)(void);
    } builtin[] = {{"hash", hash}, {"sort", sort}, {"interp", interp}, {"matmul", matmul}};
    if (argc == 3 && strcmp(argv[1], "gen") == 0)
        return gen(strtoull(argv[2], NULL, 0));
    if (argc == 4 && strcmp(argv[1], "run") == 0)
        return run(argv[2], argv[3]);
    for (size_t i = 0; argc == 2 && i < sizeof builtin / sizeof *builtin; i++) {
        if (strcmp(argv[1], builtin[i].name) != 0)
            continue;
        starting(argv[1]);
        double start = now();
        uint64_t check = builtin[i].fn();
        printf("cpubench %s %.3f %016llx\n", builtin[i].name, now() - start,
               (unsigned long long)check);
        return 0;
    }
    fprintf(stderr, "usage: ember-cpubench gen BYTES | run NAME CMD | hash | sort | interp | "
                    "matmul\n");
    return 2;
}
