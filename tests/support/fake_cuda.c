/* Interim fake CUDA driver: exports nothing yet, so the cuda backend reports it unusable. */
int fakecuda_version(void);
int fakecuda_version(void)
{
    return 0;
}
