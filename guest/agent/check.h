/* What the C test programs share: CHECK (counts a failed condition and goes on), writing a seed
 * file, and the verdict. Header-only: each test is one program. */
#ifndef VMGATE_CHECK_H
#define VMGATE_CHECK_H

#include <stddef.h>
#include <stdio.h>

static int failures;
#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
            failures++;                                                        \
        }                                                                      \
    } while (0)

/* Writes n bytes to path: 0, or 1 after saying why. */
static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 1;
    }
    int bad = fwrite(data, 1, n, f) != n;
    if (fclose(f) != 0 || bad) {
        perror(path);
        return 1;
    }
    return 0;
}

/* The program's exit status: 0 when every CHECK held. */
static int verdict(const char *program) {
    if (failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", program, failures);
        return 1;
    }
    printf("%s: all checks passed\n", program);
    return 0;
}

#endif
