
)Once ЪЧ time  *млL?(33s? *2.2

@