/* Giving back the pages of pymalloc's empty pools (see agent/memory.py).
 *
 * Why: pymalloc returns an arena (1 MiB) to the kernel only once all of its 64 pools are empty.
 * After a burst, a few objects that outlived it (a counter's int, a timer) keep each arena the
 * burst added, and every empty pool in it stays resident: 3-4 MB per process on the sidecar
 * config. CPython keeps no list of its arenas anyone can read, so this module wraps the arena
 * allocator (PyObject_SetArenaAllocator, a public API) to know each one, and at release() tells
 * the kernel it may drop the pages of every empty pool but the first, which holds the pool's header.
 *
 * Why that is safe: pymalloc runs under the GIL, and so does release(): no pool changes meanwhile.
 * An empty pool's header (its first page, kept) links it into its arena's free list; its other
 * pages hold only freed blocks. Setting the header's size class to "none" (DUMMY_SIZE_IDX, as a
 * never-used pool has) makes pymalloc lay the pool out afresh when it takes it again, instead of
 * following the old free list into pages the kernel now fills with zeros.
 *
 * The layout of a pool header is CPython's own (Objects/obmalloc.c, the same from 3.10 to 3.13);
 * release() checks every pool it reads against it, and stops for good at the first that does not
 * match, as it does where the layout may differ (another version, 32 bits, no GIL). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030E0000 && SIZEOF_VOID_P == 8 && !defined(Py_GIL_DISABLED)
#define LAYOUT_KNOWN 1
#else
#define LAYOUT_KNOWN 0
#endif

#define ARENA_SIZE (1u << 20)    /* 64-bit CPython 3.10+: ARENA_BITS 20 */
#define POOL_SIZE (1u << 14)     /* POOL_BITS 14 */
#define ALIGNMENT 16u
#define SMALL_CLASSES (512u / ALIGNMENT)
#define DUMMY_SIZE_IDX 0xffffu
#define MAX_ARENAS 16384         /* 16 GiB of arenas; past it, new ones are simply not tracked */

struct pool_header {
    union { void *padding; unsigned int count; } ref;
    void *freeblock;
    void *nextpool;
    void *prevpool;
    unsigned int arenaindex;
    unsigned int szidx;
    unsigned int nextoffset;
    unsigned int maxnextoffset;
};

static PyObjectArenaAllocator wrapped;
static void *arenas[MAX_ARENAS];
static size_t used;  /* arenas[used:] are all empty slots: the scans stop there */
static int installed;
static int broken;  /* a header did not match the layout: never touch a pool again */

static void *
tracked_alloc(void *ctx, size_t size)
{
    void *arena = wrapped.alloc(wrapped.ctx, size);
    if (arena != NULL && size == ARENA_SIZE) {
        for (size_t i = 0; i < MAX_ARENAS; i++) {
            if (arenas[i] == NULL) {
                arenas[i] = arena;
                if (i >= used)
                    used = i + 1;
                break;
            }
        }
    }
    return arena;
}

static void
tracked_free(void *ctx, void *arena, size_t size)
{
    for (size_t i = 0; i < used; i++) {
        if (arenas[i] == arena) {
            arenas[i] = NULL;
            while (used > 0 && arenas[used - 1] == NULL)
                used--;
            break;
        }
    }
    wrapped.free(wrapped.ctx, arena, size);
}

static PyObject *
install(PyObject *module, PyObject *unused)
{
    if (!LAYOUT_KNOWN)
        Py_RETURN_FALSE;
    if (!installed) {
        PyObjectArenaAllocator tracker = {NULL, tracked_alloc, tracked_free};
        PyObject_GetArenaAllocator(&wrapped);
        PyObject_SetArenaAllocator(&tracker);
        installed = 1;
    }
    Py_RETURN_TRUE;
}

static int
header_matches(const struct pool_header *pool)
{
    if (pool->nextoffset == 0)  /* never carved out of its arena: untouched zeros */
        return pool->ref.count == 0;
    if (pool->szidx == DUMMY_SIZE_IDX)  /* released before, not used since */
        return pool->ref.count == 0;
    if (pool->szidx >= SMALL_CLASSES)
        return 0;
    unsigned int size = (pool->szidx + 1) * ALIGNMENT;
    return pool->maxnextoffset == POOL_SIZE - size && pool->nextoffset <= POOL_SIZE + size
        && pool->ref.count <= POOL_SIZE / size;
}

static PyObject *
release(PyObject *module, PyObject *unused)
{
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long given = 0;
    if (!installed || broken || page <= 0 || POOL_SIZE % (unsigned long)page != 0)
        return PyLong_FromLong(-1);
    for (size_t i = 0; i < used; i++) {
        uintptr_t base = (uintptr_t)arenas[i];
        if (base == 0)
            continue;
        uintptr_t at = (base + POOL_SIZE - 1) & ~(uintptr_t)(POOL_SIZE - 1);
        for (; at + POOL_SIZE <= base + ARENA_SIZE; at += POOL_SIZE) {
            struct pool_header *pool = (struct pool_header *)at;
            if (!header_matches(pool)) {
                broken = 1;
                return PyLong_FromLong(-1);
            }
            if (pool->ref.count != 0 || pool->nextoffset == 0 || pool->szidx == DUMMY_SIZE_IDX)
                continue;
            if (madvise((void *)(at + page), POOL_SIZE - page, MADV_DONTNEED) == 0) {
                pool->szidx = DUMMY_SIZE_IDX;
                given += POOL_SIZE - page;
            }
        }
    }
    return PyLong_FromUnsignedLongLong(given);
}

static PyObject *
tracked(PyObject *module, PyObject *unused)
{
    Py_ssize_t n = 0;
    for (size_t i = 0; i < used; i++)
        n += arenas[i] != NULL;
    return PyLong_FromSsize_t(n);
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS, "Track every arena pymalloc maps from now on; False where the layout is unknown."},
    {"release", release, METH_NOARGS, "Give back the pages of the tracked arenas' empty pools: bytes given, -1 if none can be."},
    {"tracked", tracked, METH_NOARGS, "How many arenas are tracked."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "agent._pools", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__pools(void)
{
    return PyModule_Create(&module_def);
}
