/*
 * The routing predictor's bookkeeping: guesses scored against what the layer used (precision
 * and recall counted exactly), unscored layers, and the affinity counts' guesses against a
 * hand count.
 */
#include "predictor/predictor.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

START_TEST(guesses_are_scored_per_layer)
{
    char err[128];
    pred *p = NULL;
    ck_assert_int_eq(pred_create(&p, PRED_PREGATE, 3, 8, err, sizeof err), 0);
    const int32_t g1[] = {1, 2, 3}, a1[] = {2, 3, 5, 6};
    pred_guess(p, 1, g1, 3);
    pred_actual(p, 1, a1, 4);
    pred_actual(p, 2, a1, 4); /* no guess for layer 2: not scored */
    const int32_t g2[] = {7}, a2[] = {7};
    pred_guess(p, 1, g2, 1);
    pred_actual(p, 1, a2, 1);
    pred_actual(p, 1, a2, 1); /* the guess was consumed: not scored twice */
    pred_layer_stats st;
    pred_get_stats(p, 1, &st);
    ck_assert_uint_eq(st.steps, 2);
    ck_assert_uint_eq(st.guessed, 4);
    ck_assert_uint_eq(st.used, 5);
    ck_assert_uint_eq(st.correct, 3);
    pred_get_stats(p, 2, &st);
    ck_assert_uint_eq(st.steps, 0);
    pred_get_stats(p, 9, &st); /* out of range: zeros */
    ck_assert_uint_eq(st.guessed, 0);
    pred_destroy(&p);
    ck_assert_ptr_null(p);
    pred_kind k;
    ck_assert_int_eq(pred_kind_parse("affinity", &k), 0);
    ck_assert_int_eq(k, PRED_AFFINITY);
    ck_assert_int_eq(pred_kind_parse("oracle", &k), -EINVAL);
    ck_assert_int_eq(pred_create(&p, PRED_NONE, 0, 8, err, sizeof err), -EINVAL);
}
END_TEST

START_TEST(affinity_guesses_follow_the_counts)
{
    char err[128];
    pred *p = NULL;
    ck_assert_int_eq(pred_create(&p, PRED_AFFINITY, 2, 6, err, sizeof err), 0);
    int32_t out[6];
    const int32_t l0a[] = {0, 1}, l1a[] = {4, 5}, l0b[] = {0}, l1b[] = {3};
    ck_assert_int_eq(pred_affinity_guess(p, 0, l0a, 2, 2, out), 0); /* nothing learned yet */
    /* step 1: (0,1) then (4,5); steps 2-4: (0) then (3) */
    pred_actual(p, 0, l0a, 2);
    pred_actual(p, 1, l1a, 2);
    for (int i = 0; i < 3; i++) {
        pred_actual(p, 0, l0b, 1);
        pred_actual(p, 1, l1b, 1);
    }
    /* After expert 0: 3 counts for 3, 1 each for 4 and 5. */
    ck_assert_int_eq(pred_affinity_guess(p, 0, l0b, 1, 2, out), 2);
    ck_assert_int_eq(out[0], 3);
    ck_assert_int_eq(out[1], 4); /* tie 4/5: the lower index */
    /* After expert 1 alone: only 4 and 5 were seen, so only two guesses exist. */
    const int32_t one[] = {1};
    ck_assert_int_eq(pred_affinity_guess(p, 0, one, 1, 4, out), 2);
    ck_assert(out[0] == 4 && out[1] == 5);
    /* The last layer has no next layer. */
    ck_assert_int_eq(pred_affinity_guess(p, 1, l1a, 2, 2, out), 0);
    pred_destroy(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("predictor");
    TCase *tc = tcase_create("predictor");
    tcase_add_test(tc, guesses_are_scored_per_layer);
    tcase_add_test(tc, affinity_guesses_follow_the_counts);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
